"""Chat prompts for chat models: a benchmark's `chat_template` (default: on for `models: tuned`)
renders prompts with the tokenizer's chat template through lm-eval's apply_chat_template; the
decode run records it; scoring replays the same prompts; a tokenizer without one is refused."""

from __future__ import annotations

import json
import logging

import pytest
import torch

import fsgen.harness  # noqa: F401
from fsgen.decoding import engine
from fsgen.harness.lm import ChatTemplateMissing, FsgenLM
from fsgen.harness.replay import read_samples
from fsgen.harness.run import evaluate_benchmark, flat_metrics, run_decode, run_score
from fsgen.harness.tasks import benchmark_entry
from fsgen.testing import CHATML_TEMPLATE, build_chat_tokenizers, build_model, write_generation_task
from fsgen.trace import read_trace

pytestmark = pytest.mark.timeout(300)
torch.set_num_threads(1)

QUESTIONS = [("Tom has 3 apples. He buys 4 more. How many?", "7"), ("What is 9 times 8?", "72"),
             ("Ann had 12 pens and gave away 5. How many?", "7")]


@pytest.fixture(scope="module")
def chat_models(tmp_path_factory):
    """small and large chat models (ChatML template, EOS <|im_end|>) and a base model."""
    root = tmp_path_factory.mktemp("chat")
    base, chat = build_chat_tokenizers(root / "tok")
    return {"small": build_model(root / "small", chat, hidden_size=32, num_layers=2, seed=0),
            "large": build_model(root / "large", chat, hidden_size=64, num_layers=3, seed=1, vocab_pad=3),
            "base": build_model(root / "base", base, hidden_size=32, num_layers=2, seed=2)}


@pytest.fixture(scope="module")
def tasks_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("tasks")
    data = root / "qa.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in QUESTIONS))
    write_generation_task(root / "yaml", "tiny_qa", data)
    return root / "yaml"


def chatml(user: str) -> str:
    """ChatML written out: one user turn and the assistant's header."""
    return f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"


ENTRY = {"task": "tiny_qa", "limit": None, "seed": 1, "max_new_tokens": 6, "batch_size": 2}


def test_entry_resolves_chat_template_from_models():
    assert benchmark_entry("b", {**ENTRY, "models": "tuned"})["chat_template"] is True
    assert benchmark_entry("b", {**ENTRY, "models": "tuned", "chat_template": None})["chat_template"] is True
    assert benchmark_entry("b", {**ENTRY, "models": "tuned", "chat_template": False})["chat_template"] is False
    assert benchmark_entry("b", ENTRY)["chat_template"] is False  # models: base by default
    assert benchmark_entry("b", {**ENTRY, "chat_template": True})["chat_template"] is True
    with pytest.raises(ValueError, match="benchmark 'b': chat_template must be"):
        benchmark_entry("b", {**ENTRY, "chat_template": "yes"})
    with pytest.raises(ValueError, match="benchmark 'b': models must be"):
        benchmark_entry("b", {**ENTRY, "models": "chat"})


def test_chat_benchmark_decodes_chat_prompts_and_scores_them(chat_models, tasks_dir, tmp_path):
    systems = engine.load_systems("oracle", small=str(chat_models["small"]), large=str(chat_models["large"]))
    entry = {**ENTRY, "models": "tuned"}
    lm = FsgenLM(systems=systems, method="oracle")
    assert lm.chat_template(True) == CHATML_TEMPLATE  # lm-eval's selection (TemplateLM) sees the template
    run_decode("qa", entry, None, tmp_path, lm=lm, tasks_dir=tasks_dir)
    expected = [chatml(f"Question: {q}\nAnswer:") for q, _ in QUESTIONS]
    samples = sorted(read_samples(tmp_path / "samples.jsonl"), key=lambda s: s["doc_id"])
    assert [s["arguments"][0][0] for s in samples] == expected
    generations = sorted((json.loads(line) for line in (tmp_path / "generations.jsonl").read_text().splitlines()),
                         key=lambda g: g["doc_id"])
    assert [g["prompt"] for g in generations] == expected
    assert generations[0]["token_ids"] != []  # the engine decoded from the rendered prompt
    record = json.loads((tmp_path / "decode_results.json").read_text())["fsgen_run"]["chat_template"]
    assert record["applied"] is True and record["model"] == str(chat_models["small"])
    assert record["template"] == CHATML_TEMPLATE and record["special_tokens"]["eos_token"] == "<|im_end|>"
    _, meta = read_trace(tmp_path / "trace.parquet")
    assert meta["harness"]["chat_template"]["sha256"] == record["sha256"]
    # scoring renders the recorded template again: replay finds the decoded prompts
    metrics = run_score("qa", entry, tmp_path / "samples.jsonl", tmp_path, tasks_dir=tasks_dir, bootstrap_iters=0)
    direct, _ = evaluate_benchmark(FsgenLM(systems=systems, method="oracle"), "qa", entry, tmp_path / "direct",
                                   predict_only=False, tasks_dir=tasks_dir, bootstrap_iters=0)
    assert metrics["metrics"] == flat_metrics(direct["results"]["tiny_qa"])
    assert metrics["n"] == len(QUESTIONS)


def test_base_benchmark_and_explicit_false_keep_raw_prompts(chat_models, tasks_dir, tmp_path):
    systems = engine.load_systems("single", model=str(chat_models["large"]))
    for name, entry in [("base", ENTRY), ("off", {**ENTRY, "models": "tuned", "chat_template": False})]:
        run_decode("qa", entry, None, tmp_path / name, lm=FsgenLM(systems=systems, method="single"), tasks_dir=tasks_dir)
        samples = sorted(read_samples(tmp_path / name / "samples.jsonl"), key=lambda s: s["doc_id"])
        assert [s["arguments"][0][0] for s in samples] == [f"Question: {q}\nAnswer:" for q, _ in QUESTIONS]
        record = json.loads((tmp_path / name / "decode_results.json").read_text())["fsgen_run"]["chat_template"]
        assert record == {"applied": False}


def test_chat_benchmark_without_a_chat_template_fails_before_decoding(chat_models, tasks_dir, tmp_path, monkeypatch):
    systems = engine.load_systems("single", model=str(chat_models["base"]))
    monkeypatch.setattr(engine, "decode", lambda *a, **k: pytest.fail("decoded without a chat template"))
    with pytest.raises(ChatTemplateMissing, match=f"benchmark 'qa'.*model '{chat_models['base']}' has no chat template"):
        run_decode("qa", {**ENTRY, "models": "tuned"}, None, tmp_path, lm=FsgenLM(systems=systems, method="single"),
                   tasks_dir=tasks_dir)
    assert not (tmp_path / "samples.jsonl").exists()


def test_score_of_a_chat_benchmark_needs_the_recorded_template(chat_models, tasks_dir, tmp_path):
    systems = engine.load_systems("single", model=str(chat_models["large"]))
    run_decode("qa", ENTRY, None, tmp_path, lm=FsgenLM(systems=systems, method="single"), tasks_dir=tasks_dir)
    with pytest.raises(ValueError, match="benchmark 'qa' asks for chat prompts.*recorded no chat template"):
        run_score("qa", {**ENTRY, "models": "tuned"}, tmp_path / "samples.jsonl", tmp_path, tasks_dir=tasks_dir)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the fallback is for machines without CUDA")
def test_cuda_device_without_cuda_falls_back_to_cpu(chat_models, caplog):
    with caplog.at_level(logging.WARNING, logger="fsgen.harness.lm"):
        lm = FsgenLM(method="single", model=str(chat_models["base"]), device="cuda:0")
    assert lm.device.type == "cpu" and "'cuda:0'" in caplog.text and "CPU" in caplog.text
