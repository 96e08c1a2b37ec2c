"""The GGUF round trip on the real offline chat model: smollm2-135m-instruct tuned for two steps (configs/
chat-sft-lora.yaml), exported with `export --gguf --quant f16`, run by llama.cpp (llama-cpp-python) and by
transformers (the merged model): the same greedy 16 tokens on 10 held-out prompts, and per-token log-likelihoods
within TOLERANCE. Skips where llama_cpp is not importable or no llama.cpp checkout (LLAMA_CPP_DIR) is there."""

from __future__ import annotations

import os

import pytest

from tunesmith import api
from tunesmith.runs import gguf

pytestmark = pytest.mark.e2e
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (it compiles llama.cpp)")

PROMPTS = ["What is the capital of France?", "How do plants make food?", "Tell me a fun fact about cats.",
           "What is 12 times 12?", "Why is the sky blue?", "Name three colours.", "What does a compiler do?",
           "Who wrote Romeo and Juliet?", "How many legs does a spider have?", "What is a good breakfast?"]
NEW_TOKENS = 16
TOLERANCE = 0.05  # nats per token: the f16 GGUF against the float32 merged model
SMALL = ["data.train_size=32", "train.max_steps=2", "train.eval_strategy=no", "eval.max_examples=8",
         "eval.num_samples=1", "eval.probes=[]", "eval.max_new_tokens=4"]


def _converter_or_skip():
    try:
        gguf.find_converter()
    except Exception as err:
        pytest.skip(f"no llama.cpp converter: {err}")


def _hf_greedy(model, ids: list[int], eos: int) -> list[int]:
    import torch

    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                             max_new_tokens=NEW_TOKENS, do_sample=False, repetition_penalty=1.0,
                             no_repeat_ngram_size=0, pad_token_id=eos)[0, len(ids):].tolist()
    return out[: out.index(eos) + 1] if eos in out else out


def _llama_greedy(llm, ids: list[int], eos: int) -> list[int]:
    llm.reset()
    out = []
    for token in llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
        out.append(token)
        if token == eos or len(out) == NEW_TOKENS:
            break
    return out


def _logprobs_hf(model, ids: list[int], cont: list[int]) -> list[float]:
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([ids + cont])).logits[0].float().log_softmax(-1)
    return [float(logits[len(ids) - 1 + k, t]) for k, t in enumerate(cont)]


def _logprobs_llama(llm, ids: list[int], cont: list[int]) -> list[float]:
    import numpy as np

    llm.reset()
    llm.eval(ids + cont)
    scores = np.asarray(llm.scores[: len(ids) + len(cont)], dtype=np.float64)
    rows = scores - np.log(np.exp(scores - scores.max(-1, keepdims=True)).sum(-1, keepdims=True)) - scores.max(-1, keepdims=True)
    return [float(rows[len(ids) - 1 + k, t]) for k, t in enumerate(cont)]


def test_the_f16_gguf_continues_like_the_merged_model(tmp_path):
    from transformers import AutoModelForCausalLM

    from tunesmith.runs.adapters import export

    _converter_or_skip()
    run = api.train("configs/chat-sft-lora.yaml", out=tmp_path / "run", overrides=SMALL)
    path = gguf.export_gguf(run.dir, tmp_path / "gguf", quant="f16")
    assert (path.parent / "Modelfile").read_text().count("PARAMETER stop") >= 1
    merged = AutoModelForCausalLM.from_pretrained(str(export(run.dir, tmp_path / "merged", merge=True))).eval()
    tok = run.tokenizer
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=512, logits_all=True, n_threads=min(4, os.cpu_count() or 1),
                          seed=0, verbose=False)
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    same, gaps, report = 0, [], []
    for question in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": question}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False).input_ids
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids, "llama.cpp tokenizes the prompt differently"
        hf, cpp = _hf_greedy(merged, ids, eos), _llama_greedy(llm, ids, eos)
        same += hf == cpp
        gap = max(abs(a - b) for a, b in zip(_logprobs_hf(merged, ids, hf), _logprobs_llama(llm, ids, hf)))
        gaps.append(gap)
        report.append(f"{question!r}: {'same' if hf == cpp else 'DIFFERENT'} ({tok.decode(hf)!r} / {tok.decode(cpp)!r}), "
                      f"largest log-prob gap {gap:.4f}")
    llm.close()
    print("\n".join(report))
    assert same == len(PROMPTS), "\n".join(report)
    assert max(gaps) < TOLERANCE, "\n".join(report)
