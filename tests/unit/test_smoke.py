import pytest

from tunesmith import api

OBJECTIVES = ["classify", "causal_lm", "sft"]


@pytest.mark.parametrize("objective", OBJECTIVES)
def test_tiny_lora_run(objective, tiny_bert, tiny_llama, sentiment_file, qa_file, text_file, make_config, tmp_path):
    model = tiny_bert if objective == "classify" else tiny_llama
    source = {"classify": sentiment_file, "sft": qa_file, "causal_lm": text_file}[objective]
    run = api.train(make_config(model, source, objective), out=tmp_path / "run")
    assert (run.dir / "eval.json").exists()
