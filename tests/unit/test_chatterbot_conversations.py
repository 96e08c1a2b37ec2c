"""The offline multi-turn dataset: ChatterBot's YAML conversations as OpenAI `messages` rows."""

from __future__ import annotations

from typer.testing import CliRunner

from tunesmith.cli import app


def test_chatterbot_conversations_alternate_user_and_assistant():
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset("chatterbot-conversations")
    assert ds.column_names == ["messages", "opening", "category"]
    conversations = ds["messages"][:]
    assert len(conversations) == len({tuple(m["content"] for m in c) for c in conversations}) == 898  # repeats dropped
    for convo, opening in zip(conversations, ds["opening"][:]):
        assert [m["role"] for m in convo] == ["user", "assistant"] * (len(convo) // 2)  # ends with an answer
        assert all(m["content"].strip() for m in convo) and convo[0]["content"] == opening
    assert sum(len(c) > 2 for c in conversations) == 68 and max(len(c) for c in conversations) == 26
    # one trivia entry is a bare string, not a list of turns: it is left out, not split into characters
    assert not any(len(c) > 4 and all(len(m["content"]) == 1 for m in c) for c in conversations)


def test_assets_lists_the_conversations():
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["assets"])
    assert result.exit_code == 0 and "chatterbot-conversations" in result.output
