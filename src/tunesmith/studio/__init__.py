"""The feedback studio: a local web app where people rate and compare what models answer, stored in SQLite and
exported as reward / DPO / KTO training data.

db.py (the file, schema, migrations, transactions, tokens) · study.py (settings, prompts, models, tasks) ·
generate.py (missing responses, cached; a background job) · queue.py (raters, sessions, the queue, answers) ·
stats.py (agreement, kappa, win rates, Bradley-Terry) · owner.py (the owner page's figures and plots) ·
export.py (pairs, ratings, kto) · app.py (the FastAPI app, its error pages) · web.py (what routes share: tokens,
CSRF, request bodies) · rater_routes.py, owner_routes.py · server.py (Uvicorn) · cli/studio.py (`tunesmith studio`).
"""
