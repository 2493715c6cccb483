"""Counterfactual continuations (fsgen.harness.counterfactual): the sample of interventions, the
continuation against a slow reference (full forwards, one request at a time, the original
request decoded again with System 1's token forced at the position), stop strings over the
whole answer, and the resume cache."""

from __future__ import annotations

import collections

import pandas as pd
import pytest
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_systems
from fsgen.harness.counterfactual import (
    budget_groups,
    continue_answers,
    counterfactual_requests,
    run_counterfactual_decode,
    sample_interventions,
)
from fsgen.testing import build_tiny_family

torch.set_num_threads(1)
PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "Ann had 12 pens", "Q", "A box holds 6 eggs."]
BUDGET = 12


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.fixture(scope="module")
def systems(family):
    return load_systems("oracle", small=str(family["small"]), large=str(family["large"]))


def hand_trace() -> pd.DataFrame:
    flags = [True, False, True, True, False, True, True, True]
    return pd.DataFrame({"request_id": [0, 0, 0, 1, 1, 2, 2, 2], "position": [0, 1, 2, 0, 1, 0, 1, 2],
                         "token_id": range(8), "s1_token_id": range(10, 18), "intervened": flags,
                         "s1_top1_prob": 0.3, "s1_entropy": 1.0})


def test_sample_is_seeded_and_drawn_from_interventions():
    trace = hand_trace()
    a, b = sample_interventions(trace, 4, seed=3), sample_interventions(trace, 4, seed=3)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 4 and a["token_id"].isin([0, 2, 3, 5, 6, 7]).all()
    assert list(zip(a["request_id"], a["position"])) == sorted(zip(a["request_id"], a["position"]))
    draws = {tuple(sample_interventions(trace, 2, seed=s)["token_id"]) for s in range(20)}
    assert len(draws) > 3  # the seed changes the sample
    assert sample_interventions(trace, 100, seed=0)["token_id"].tolist() == [0, 2, 3, 5, 6, 7]
    assert len(sample_interventions(trace, 0, seed=0)) == 0


# ---- the slow reference ------------------------------------------------------------------------


def reference_answer(systems, prompt: str, position: int, forced: int, stop: tuple, budget: int) -> list[int]:
    """The request decoded again by the large model alone (full forward per token, no cache),
    with `forced` at `position`; it ends at EOS, at the token completing a stop string anywhere
    in the answer's text, or at the budget."""
    tok, vocab, eos = systems.tokenizer, systems.vocab_size, systems.tokenizer.eos_token_id
    ids = tok(prompt).input_ids
    out = []
    while True:
        if len(out) == position:
            token = forced
        else:
            with torch.no_grad():
                logits = systems.large(input_ids=torch.tensor([ids + out])).logits[0, -1, :vocab]
            token = int(logits.argmax())
        out.append(token)
        text = tok.decode(out, skip_special_tokens=True)
        if token == eos or any(s in text for s in stop) or len(out) >= budget:
            return out


def generations_of(systems, stop: tuple) -> tuple[list[dict], pd.DataFrame]:
    """An oracle job's generations (generations.jsonl's fields) and trace."""
    result = decode(systems, PROMPTS, DecodeConfig(method="oracle", max_new_tokens=BUDGET, stop=stop, progress=False))
    generations = [{**g, "task": "t", "doc_id": g["request_id"], "idx": 0, "stop": list(stop), "max_new_tokens": BUDGET}
                   for g in result.generations]
    return generations, result.trace


def frequent_characters(systems, n: int) -> tuple:
    """Characters the large model writes often on these prompts (stop strings that fire)."""
    generations, _ = generations_of(systems, ())
    counts = collections.Counter(ch for g in generations for ch in g["text"] if ch != "\ufffd")
    return tuple(ch for ch, _ in counts.most_common(n))


@pytest.mark.parametrize("n_stops", [0, 3])
def test_continuations_equal_slow_reference(systems, n_stops):
    stop = frequent_characters(systems, n_stops) if n_stops else ()
    generations, trace = generations_of(systems, stop)
    sample = sample_interventions(trace, 1000, seed=0)
    requests = counterfactual_requests(sample, generations)
    config = DecodeConfig(method="oracle", router="always", batch_size=3, progress=False)
    answers = continue_answers(systems, config, requests)
    expected = [reference_answer(systems, PROMPTS[r.request_id], r.position, r.s1_token_id, stop, BUDGET)
                for r in sample.itertuples()]
    assert answers == expected
    eos = systems.tokenizer.eos_token_id
    early = [len(a) < BUDGET and a[-1] != eos for a in answers]  # ended by a stop string
    assert any(early) if n_stops else not any(early)
    assert any(len(a) == BUDGET for a in answers)  # and some by the budget left after the prefix


def test_continuing_with_the_original_token_reproduces_the_job(systems):
    generations, trace = generations_of(systems, frequent_characters(systems, 2))
    sample = sample_interventions(trace, 1000, seed=0)
    sample = sample.assign(s1_token_id=sample["token_id"])  # System 2's own token: nothing changes
    answers = continue_answers(systems, DecodeConfig(method="oracle", progress=False),
                               counterfactual_requests(sample, generations))
    assert answers == [generations[r]["token_ids"] for r in sample["request_id"]]


def test_budget_groups_batch_by_stop_strings_within_the_context():
    requests = [{"stop": ("a",), "max_new_tokens": 10, "prefix": [1] * 3}, {"stop": ("a",), "max_new_tokens": 10, "prefix": [1] * 6},
                {"stop": (), "max_new_tokens": 10, "prefix": [1] * 2}, {"stop": ("a",), "max_new_tokens": 10, "prefix": [1] * 5}]
    inputs = {0: [0] * 7, 1: [0] * 10, 2: [0] * 6, 3: [0] * 45}  # prompt + prefix
    # the largest budget left of stop ("a",) is 7; request 3 would need 45 + 7 > 50 positions
    assert budget_groups(requests, inputs, context=50) == {(("a",), 7): [0, 1], ((), 8): [2], (("a",), 5): [3]}
    assert budget_groups(requests, inputs, context=None) == {(("a",), 7): [0, 1, 3], ((), 8): [2]}


class StubDecode:
    """decode_fn answering every prompt with `continuation` (and counting the prompts it got)."""

    def __init__(self, continuation):
        self.continuation, self.prompts = continuation, []

    def __call__(self, systems, prompt_ids, config, request_ids):
        from fsgen.decoding.engine import DecodeResult

        self.prompts += prompt_ids
        budget = config.max_new_tokens
        return DecodeResult([{"request_id": r, "prompt_ids": p, "text": "", "token_ids": self.continuation[:budget]}
                             for r, p in zip(request_ids, prompt_ids)], pd.DataFrame(), {})


def test_stop_string_spanning_prefix_and_continuation_ends_the_answer(systems):
    tok = systems.tokenizer
    a, b, c = (tok.convert_tokens_to_ids(ch) for ch in "xyz")
    request = {"prompt": "Q", "stop": ("yz",), "max_new_tokens": 8, "prefix": [a, b]}
    stub = StubDecode([c, a, b, c])  # "zxyz": "yz" completes at the continuation's first token
    (answer,) = continue_answers(systems, DecodeConfig(method="oracle", progress=False), [request], decode_fn=stub)
    assert answer == [a, b, c]
    assert stub.prompts == [tok("Q").input_ids + [a, b]]


def test_answer_ending_at_system1_token_is_not_continued(systems):
    tok = systems.tokenizer
    a, b = (tok.convert_tokens_to_ids(ch) for ch in "xy")
    requests = [{"prompt": "Q", "stop": ("xy",), "max_new_tokens": 8, "prefix": [a, b]},  # stop string
                {"prompt": "Q", "stop": (), "max_new_tokens": 8, "prefix": [a, tok.eos_token_id]},  # EOS
                {"prompt": "Q", "stop": (), "max_new_tokens": 2, "prefix": [a, b]}]  # budget
    stub = StubDecode([a, a, a])
    answers = continue_answers(systems, DecodeConfig(method="oracle", progress=False), requests, decode_fn=stub)
    assert answers == [r["prefix"] for r in requests] and stub.prompts == []


def test_trace_and_generations_must_agree(systems):
    generations, trace = generations_of(systems, ())
    sample = sample_interventions(trace, 3, seed=0).assign(token_id=-1)
    with pytest.raises(ValueError, match="disagree"):
        counterfactual_requests(sample, generations)


def test_resume_cache_serves_finished_continuations(systems, tmp_path, monkeypatch):
    import json

    from fsgen.decoding import engine
    from fsgen.harness.counterfactual import read_frame
    from fsgen.trace import write_trace

    generations, trace = generations_of(systems, ())
    write_trace(trace, tmp_path / "trace.parquet", {"method": "oracle"})
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in generations))
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"exact_match,none": 0.5}}))
    calls = []
    real = engine.decode_ids
    monkeypatch.setattr(engine, "decode_ids", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    job = {"stage": "counterfactual", "benchmark": "t", "variant": "oracle", "large": "l", "small": "s"}

    def run(out):
        return run_counterfactual_decode(tmp_path / "trace.parquet", tmp_path / "generations.jsonl",
                                         tmp_path / "metrics.json", tmp_path / out, settings={"method": "oracle"},
                                         positions=7, seed=1, load=lambda: (systems, 4), cache_dir=tmp_path / "cache",
                                         job=job)

    first = run("a.parquet")
    decoded = sum(calls)
    assert first["status"] == "ok" and decoded == 7
    run("b.parquet")
    assert sum(calls) == decoded  # every continuation came from the cache
    a, _ = read_frame(tmp_path / "a.parquet")
    b, meta = read_frame(tmp_path / "b.parquet")
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 7 and meta["interventions"] == int(trace["intervened"].sum())
    assert (a["text"].str.len() >= 0).all() and (a["continued"] >= 0).all()


def test_task_without_accuracy_metric_is_skipped_without_loading(tmp_path, systems):
    import json

    from fsgen.harness.counterfactual import read_frame
    from fsgen.trace import write_trace

    generations, trace = generations_of(systems, ())
    write_trace(trace, tmp_path / "trace.parquet", {"method": "oracle"})
    (tmp_path / "generations.jsonl").write_text("".join(json.dumps(g) + "\n" for g in generations))
    (tmp_path / "metrics.json").write_text(json.dumps({"metrics": {"generated,none": 1.0, "response_chars,none": 40}}))

    def load():
        raise AssertionError("models loaded for a skipped job")

    meta = run_counterfactual_decode(tmp_path / "trace.parquet", tmp_path / "generations.jsonl",
                                     tmp_path / "metrics.json", tmp_path / "c.parquet", settings={"method": "oracle"},
                                     positions=5, seed=0, load=load)
    frame, written = read_frame(tmp_path / "c.parquet")
    assert meta["status"] == written["status"] == "skipped" and "generation-only" in written["reason"]
    assert len(frame) == 0 and "token_ids" in frame.columns
