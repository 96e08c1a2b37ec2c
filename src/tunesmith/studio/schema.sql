-- The feedback studio's database, schema version 1 (db.SCHEMA_VERSION; PRAGMA user_version holds the version of a
-- studio file, and db.MIGRATIONS brings an older one up to date). One study per file.

-- The study's settings: one row.
CREATE TABLE study (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    created_at REAL NOT NULL,
    rate TEXT NOT NULL CHECK (rate IN ('thumbs', 'stars', 'none')),  -- single-sided tasks: how a response is rated
    compare INTEGER NOT NULL CHECK (compare IN (0, 1)),            -- side-by-side tasks on or off
    samples INTEGER NOT NULL CHECK (samples >= 1),                 -- K responses per prompt and model
    max_new_tokens INTEGER NOT NULL,
    temperature REAL NOT NULL,
    top_p REAL NOT NULL,
    seed INTEGER NOT NULL,
    owner_token_hash TEXT NOT NULL
);

-- Who answers: a run folder or a plain model (catalog name, local folder, hub id), under a unique name.
CREATE TABLE models (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL CHECK (kind IN ('run', 'model')),
    source TEXT NOT NULL,
    added_at REAL NOT NULL
);

CREATE TABLE prompts (
    id INTEGER PRIMARY KEY,
    text TEXT NOT NULL UNIQUE,
    source TEXT NOT NULL
);

-- Generated once and cached: a re-run generates only the (prompt, model, sample) rows that are missing.
CREATE TABLE responses (
    id INTEGER PRIMARY KEY,
    prompt_id INTEGER NOT NULL REFERENCES prompts (id),
    model_id INTEGER NOT NULL REFERENCES models (id),
    sample INTEGER NOT NULL,
    text TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (prompt_id, model_id, sample)
);

-- What raters answer: 'single' rates response_a; 'pair' compares response_a and response_b (their left/right order
-- on screen is chosen per rater and recorded in the answer).
CREATE TABLE tasks (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('single', 'pair')),
    prompt_id INTEGER NOT NULL REFERENCES prompts (id),
    response_a INTEGER NOT NULL REFERENCES responses (id),
    response_b INTEGER REFERENCES responses (id),
    CHECK ((kind = 'single') = (response_b IS NULL))
);
CREATE UNIQUE INDEX tasks_single ON tasks (response_a) WHERE kind = 'single';
CREATE UNIQUE INDEX tasks_pair ON tasks (response_a, response_b) WHERE kind = 'pair';

-- Tokens are stored as SHA-256 hashes only; `salt` orders the rater's queue (a shuffle of its own).
CREATE TABLE raters (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    salt TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- A browser's session with one link: the cookie's hash and its CSRF token (POSTs must carry it).
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    rater_id INTEGER REFERENCES raters (id),  -- NULL: the owner
    csrf TEXT NOT NULL,
    created_at REAL NOT NULL
);

-- One answer per rater and task. single: rating (thumbs 1 up / 0 down, or stars 1-5); pair: verdict as clicked
-- and the responses that were shown on the left and on the right.
CREATE TABLE answers (
    id INTEGER PRIMARY KEY,
    rater_id INTEGER NOT NULL REFERENCES raters (id),
    task_id INTEGER NOT NULL REFERENCES tasks (id),
    rating INTEGER,
    verdict TEXT CHECK (verdict IN ('left', 'right', 'tie', 'both_bad')),
    left_response INTEGER REFERENCES responses (id),
    right_response INTEGER REFERENCES responses (id),
    comment TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    UNIQUE (rater_id, task_id),
    CHECK ((rating IS NULL) != (verdict IS NULL))
);
CREATE INDEX answers_task ON answers (task_id);

-- Generation progress, read by the owner page and by a second process that would otherwise generate the same rows.
CREATE TABLE generation (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    status TEXT NOT NULL CHECK (status IN ('running', 'finished', 'stopped', 'failed')),
    done INTEGER NOT NULL,
    total INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    message TEXT NOT NULL DEFAULT '',
    updated_at REAL NOT NULL
);
