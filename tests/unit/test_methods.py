"""The support table: every method x objective that applies trains on a tiny model; exactly the intended
parameters are trainable, some of them changed and every frozen one did not; a saved run reloads and
predicts the same."""

import pytest
import torch

from tunesmith import api
from tunesmith.methods.registry import METHODS, apply_method

GPU_ONLY = {"qlora"}  # tested in test_qlora.py where a CUDA GPU exists

# Small settings per method for the tiny models, and which parameter names each may train.
SETTINGS = {
    "full": {}, "head": {}, "freeze": {"top_k_layers": 1},
    "lora": {"r": 4, "lora_alpha": 8}, "dora": {"r": 4, "lora_alpha": 8},
    "prompt": {"num_virtual_tokens": 4}, "prefix": {"num_virtual_tokens": 4}, "ia3": {},
    "adapter": {"bottleneck": 8}, "features": {},
    "adalora": {"init_r": 4, "target_r": 2}, "dylora": {"r_min": 1, "r_max": 4, "lora_alpha": 8},
}
HEAD = ("classifier.", "modules_to_save")
INTENDED = {
    "full": lambda n: True,
    "head": lambda n: n.startswith("classifier."),
    "freeze": lambda n: ".layer.1." in n or ".layers.1." in n or n.startswith("classifier."),
    "lora": lambda n: "lora_" in n or "modules_to_save" in n,
    "dora": lambda n: "lora_" in n or "modules_to_save" in n,
    "prompt": lambda n: "prompt_encoder" in n or "modules_to_save" in n,
    "prefix": lambda n: "prompt_encoder" in n or "modules_to_save" in n,
    "ia3": lambda n: "ia3_" in n or "modules_to_save" in n,
    "adapter": lambda n: ".down." in n or ".up." in n or n.startswith(HEAD),
    "features": lambda n: not n.startswith("backbone."),
    "adalora": lambda n: "lora_" in n or "modules_to_save" in n,
    "dylora": lambda n: "lora_" in n or "modules_to_save" in n,
}
# docs/methods.md's support table: every method on the objectives that learn from text and labels. The feedback
# objectives (reward, dpo, kto, rl) test their methods in their own files (test_reward.py, test_preference.py, test_rl.py).
TABLE_OBJECTIVES = ("classify", "causal_lm", "sft")
CASES = [(m, o) for m in METHODS for o in TABLE_OBJECTIVES if o not in METHODS[m].unsupported and m not in GPU_ONLY]


def data_for(objective, sentiment_file, qa_file, text_file):
    return {"classify": sentiment_file, "sft": qa_file, "causal_lm": text_file}[objective]


def test_every_method_has_settings_and_a_rule():
    assert set(METHODS) - GPU_ONLY <= set(SETTINGS) & set(INTENDED)


@pytest.mark.parametrize("method,objective", CASES)
def test_method_trains_intended_parameters_and_reloads(method, objective, tiny_bert, tiny_llama, sentiment_file, qa_file,
                                                       text_file, make_config, tmp_path, monkeypatch):
    model_path = tiny_bert if objective == "classify" else tiny_llama
    cfg = make_config(model_path, data_for(objective, sentiment_file, qa_file, text_file), objective,
                      {"name": method, **SETTINGS[method]}, eval={"max_new_tokens": 4})
    seen = {}

    def spy(model, method_cfg):  # snapshot the very model that api.train is about to train
        model = apply_method(model, method_cfg)
        seen["before"] = {n: p.detach().clone().cpu() for n, p in model.named_parameters()}
        seen["trainable"] = {n for n, p in model.named_parameters() if p.requires_grad}
        return model

    from tunesmith.training import train as pipeline

    monkeypatch.setattr(pipeline, "apply_method", spy)
    run = api.train(cfg, out=tmp_path / "run")
    after = {n: p.detach().cpu() for n, p in run.model.named_parameters()}
    trainable, before = seen["trainable"], seen["before"]
    assert trainable == {n for n in before if INTENDED[method](n)}, f"unexpected trainable set for {method}"
    for name, old in before.items():
        if name not in trainable:
            assert torch.equal(old, after[name]), f"frozen parameter {name} changed"
    assert any(not torch.equal(before[n], after[n]) for n in trainable), "no trainable parameter changed"

    reloaded = api.load_run(run.dir)
    if objective == "classify":
        a, b = run.predict(["What a film.", "Dull."]), reloaded.predict(["What a film.", "Dull."])
        assert [x["label"] for x in a] == [x["label"] for x in b]
        assert all(abs(x["score"] - y["score"]) < 1e-5 for x, y in zip(a, b))
    else:
        assert run.generate(["Why?"], max_new_tokens=4) == reloaded.generate(["Why?"], max_new_tokens=4)
    assert reloaded.evaluate()["tuned"]["accuracy" if objective == "classify" else "eval_loss"] == pytest.approx(
        run.results["tuned"]["accuracy" if objective == "classify" else "eval_loss"], rel=1e-4)


def test_readme_support_table_matches_the_registry():
    from pathlib import Path

    readme = Path(__file__).parents[2].joinpath("docs/methods.md").read_text()
    table = readme[readme.index("| method \\ objective |"):].split("\n\n")[0].splitlines()[2:]
    cells = {row.split("|")[1].strip(): [c.strip() for c in row.split("|")[2:5]] for row in table}
    assert set(cells) == set(METHODS)
    for method, row in cells.items():
        for objective, cell in zip(("classify", "causal_lm", "sft"), row):
            assert cell.startswith("no") == (objective in METHODS[method].unsupported), (method, objective, cell)
