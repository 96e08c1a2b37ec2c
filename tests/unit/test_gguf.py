"""`tunesmith export RUN --gguf`: what GGUF cannot hold is refused with the reason, the converter is found or
asked for, the export folder (GGUF + Modelfile) is written or left as it was, and the Modelfile's template says
what the run's Jinja chat template says. The converter is a stand-in script here, unless LLAMA_CPP_DIR points at a
llama.cpp checkout (then the real one runs); the llama.cpp round trip is in tests/e2e/test_gguf_e2e.py."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app
from tunesmith.errors import TunesmithError
from tunesmith.runs import gguf
from tunesmith.runs.modelfile import chat_pieces, modelfile, rebuild

runner = CliRunner()

FAKE = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    model, out, quant = Path(sys.argv[1]), Path(sys.argv[sys.argv.index("--outfile") + 1]), sys.argv[-1]
    if "nomodule" in str(out):
        print("ModuleNotFoundError: No module named 'sentencepiece'"); sys.exit(1)
    if "fail" in str(out):
        print("INFO: loading model"); print("NotImplementedError: Architecture 'Foo' not supported!"); sys.exit(1)
    config = json.loads((model / "config.json").read_text())
    template = (model / "chat_template.jinja").is_file() or "chat_template" in (model / "tokenizer_config.json").read_text()
    out.write_text(json.dumps({"architectures": config["architectures"], "quant": quant, "template": bool(template),
                               "files": sorted(p.name for p in model.iterdir())}))
""")


@pytest.fixture
def fake_llama_cpp(tmp_path, monkeypatch):
    folder = tmp_path / "llama.cpp"
    folder.mkdir()
    (folder / gguf.CONVERTER).write_text(FAKE)
    monkeypatch.setenv(gguf.ENV, str(folder))
    return folder


@pytest.fixture(scope="module")
def chat_run(tiny_llama, qa_file, tmp_path_factory):
    from conftest import tiny_config

    cfg = tiny_config(tiny_llama, qa_file, "sft", train={"max_steps": 2}, eval={"num_samples": 0})
    cfg["data"]["format"] = "chat"
    return api.train(cfg, out=tmp_path_factory.mktemp("gguf") / "chat-lora").dir


def test_the_export_merges_converts_and_writes_a_modelfile(chat_run, fake_llama_cpp, tmp_path):
    result = runner.invoke(app, ["export", str(chat_run), "--gguf", "--quant", "q8_0", "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    written = json.loads((out / "out-q8_0.gguf").read_text())
    assert written["architectures"] == ["LlamaForCausalLM"] and written["quant"] == "q8_0" and written["template"]
    assert "model.safetensors" in written["files"]  # merged: no adapter left for the converter
    text = (out / "Modelfile").read_text()
    assert "FROM ./out-q8_0.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text and "TEMPLATE \"\"\"" in text
    assert json.loads((out / "tunesmith-export.json").read_text())["gguf"] == "out-q8_0.gguf"
    again = runner.invoke(app, ["export", str(chat_run), "--gguf", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output
    assert runner.invoke(app, ["export", str(chat_run), "--gguf", "--out", str(out), "--overwrite"]).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == ["Modelfile", "out-f16.gguf", "tunesmith-export.json"]


def test_a_failing_converter_names_its_last_line_and_leaves_nothing(chat_run, fake_llama_cpp, tmp_path):
    with pytest.raises(TunesmithError, match="failed \\(exit 1\\): NotImplementedError: Architecture .Foo.*git pull"):
        gguf.export_gguf(chat_run, tmp_path / "fail")
    assert not (tmp_path / "fail").exists()
    with pytest.raises(TunesmithError, match="No module named 'sentencepiece'; install .*pip install sentencepiece"):
        gguf.export_gguf(chat_run, tmp_path / "nomodule")


def test_without_llama_cpp_the_message_says_where_to_get_it(chat_run, tmp_path, monkeypatch):
    monkeypatch.delenv(gguf.ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    result = runner.invoke(app, ["export", str(chat_run), "--gguf", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "convert_hf_to_gguf.py" in result.output and "--llama-cpp" in result.output and "git clone" in result.output
    result = runner.invoke(app, ["export", str(chat_run), "--gguf", "--llama-cpp", str(tmp_path), "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "holds no convert_hf_to_gguf.py" in result.output
    result = runner.invoke(app, ["export", str(chat_run), "--gguf", "--quant", "q4_k_m", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "f16, bf16, q8_0" in result.output and "llama-quantize" in result.output
    result = runner.invoke(app, ["export", str(chat_run), "--quant", "q8_0", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "add --gguf" in result.output
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("objective, method, reason", [
    ("classify", {"name": "lora", "r": 4, "lora_alpha": 8}, "classifier"),
    ("sft", {"name": "prompt", "num_virtual_tokens": 4}, "virtual tokens"),
])
def test_what_gguf_cannot_hold_is_refused_with_the_reason(objective, method, reason, tiny_bert, tiny_llama, sentiment_file,
                                                          qa_file, make_config, fake_llama_cpp, tmp_path):
    model, data = (tiny_bert, sentiment_file) if objective == "classify" else (tiny_llama, qa_file)
    run = api.train(make_config(model, data, objective, method, train={"max_steps": 1}), out=tmp_path / "run")
    result = runner.invoke(app, ["export", str(run.dir), "--gguf", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and reason in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_the_modelfile_template_says_what_the_jinja_template_says(smollm_tokenizer):
    from tunesmith.data.chat import named_template

    tok = smollm_tokenizer
    talks = [[{"role": "user", "content": "What is a GGUF file?"}],
             [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
              {"role": "assistant", "content": "Bonjour."}, {"role": "user", "content": "And goodbye?"}]]
    original = tok.chat_template
    try:
        for source in (original, named_template("chatml", tok), named_template("llama-3", tok)):
            tok.chat_template = source
            pieces = chat_pieces(tok)
            assert pieces is not None
            for talk in talks:
                assert rebuild(pieces, talk, True) == tok.apply_chat_template(talk, tokenize=False, add_generation_prompt=True)
        tok.chat_template = ("{% for m in messages %}{% if loop.index0 % 2 == 0 %}[Q] {% else %}[A] {% endif %}"
                             "{{ m['content'] }}\n{% endfor %}")  # formats by position, not role: not for Ollama
        text = modelfile("./m.gguf", tok)
        assert "TEMPLATE" not in text.replace("no TEMPLATE", "") and f'PARAMETER stop "{tok.eos_token}"' in text
    finally:
        tok.chat_template = original


@pytest.mark.skipif(not os.environ.get(gguf.ENV), reason="LLAMA_CPP_DIR (a llama.cpp checkout) is not set")
def test_the_real_converter_writes_a_gguf_with_the_chat_template(chat_run, tmp_path):
    from gguf import GGUFReader

    path = gguf.export_gguf(chat_run, tmp_path / "real")
    reader = GGUFReader(path)
    fields = {name: field for name, field in reader.fields.items()}
    assert bytes(fields["general.architecture"].parts[-1]).decode() == "llama"
    assert "<|im_start|>" in bytes(fields["tokenizer.chat_template"].parts[-1]).decode()
    assert sys.executable  # the converter ran with this Python
