"""Every method's tokens against slow, obvious references (full forwards, no cache, one prompt
at a time), the oracle fast path against the step loop and HF generate, routers' edge cases,
and method_logprobs against what decoding used."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_systems, method_logprobs
from fsgen.testing import build_tiny_family

torch.set_num_threads(1)

PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "Ann had 12 pens", "Q", "The quick brown fox jumps over"]
MAX_NEW = 10


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    family = build_tiny_family(tmp_path_factory.mktemp("family"))
    return load_systems("proxy", small=str(family["small"]), large=str(family["large"]), small_tuned=str(family["small_tuned"]))


# ---- slow references: full forward over everything so far, one prompt, no cache ----------------


def full_last_logprobs(model, ids: list[int], vocab: int) -> torch.Tensor:
    """[V] log-probs of the next token after `ids` (one full forward, no cache)."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1, :vocab].float()
    return torch.log_softmax(logits, dim=-1)


def reference_decode(systems, prompt: str, method: str, alpha=None, beta=0.5, formula="blend",
                     consult=lambda s1: True, max_new=MAX_NEW) -> list[int]:
    """The method's tokens, written out directly from the definitions."""
    tok, V = systems.tokenizer, systems.vocab_size
    ids = tok(prompt).input_ids
    eos = tok.eos_token_id
    out = []
    for _ in range(max_new):
        seq = ids + out
        s1_model = systems.small_tuned if method == "proxy" else systems.small
        s = full_last_logprobs(s1_model, seq, V)
        if method == "single:small" or not consult(s):
            token = int(s.argmax())
        else:
            l = full_last_logprobs(systems.large, seq, V)
            if method == "oracle":
                token = int(l.argmax())
            elif method == "contrastive":
                a = 0.1 if alpha is None else alpha
                score = s + beta * (l - s) if formula == "blend" else (1 + beta) * l - beta * s
                plausible = l >= math.log(a) + l.max()
                score = torch.where(plausible, score, torch.tensor(float("-inf")))
                token = int(score.argmax())
            elif method == "proxy":
                a = 1.0 if alpha is None else alpha
                base = full_last_logprobs(systems.small, seq, V)
                token = int((l + a * (s - base)).argmax())
        out.append(token)
        if token == eos:
            break
    return out


def alone(systems, method: str):
    """(systems, method) to decode with: "single:<role>" is that model alone (method single)."""
    method, _, role = method.partition(":")
    return (systems.alone(role), method) if role else (systems, method)


def run(systems, method, **kw):
    kw.setdefault("max_new_tokens", MAX_NEW)
    kw.setdefault("progress", False)
    systems, method = alone(systems, method)
    return decode(systems, PROMPTS, DecodeConfig(method=method, **kw))


def token_lists(result):
    return [g["token_ids"] for g in result.generations]


# ---- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,params",
    [("single:small", {}), ("contrastive", {"formula": "blend"}), ("contrastive", {"formula": "standard", "beta": 1.0}),
     ("contrastive", {"alpha": 0.5}), ("proxy", {}), ("proxy", {"alpha": 0.5}), ("oracle", {})],
)
def test_methods_equal_slow_reference(systems, method, params):
    result = run(systems, method=method, **params)
    expected = [reference_decode(systems, p, method, **params) for p in PROMPTS]
    assert token_lists(result) == expected


def test_threshold_router_equals_reference_with_catch_up(systems):
    """Partial consultation: System 2's cache catches up over skipped tokens, results unchanged."""
    t = 0.08
    for method in ("oracle", "contrastive", "proxy"):
        result = run(systems, method=method, router=f"threshold:{t}")
        called = result.trace["s2_called"]
        assert 0 < called.sum() < len(called), "the threshold should consult System 2 only sometimes"
        expected = [reference_decode(systems, p, method, consult=lambda s: float(s.exp().max()) < t) for p in PROMPTS]
        assert token_lists(result) == expected, method


def test_oracle_equals_large_generate(systems):
    """Oracle (fast path) = the large model's own greedy generate, on the shared vocabulary."""
    result = run(systems, method="oracle")
    large, tok, V = systems.large, systems.tokenizer, systems.vocab_size
    padded = large.get_output_embeddings().weight.shape[0]
    assert padded > V  # the tiny family's large model has a padded vocabulary
    for prompt, gen in zip(PROMPTS, token_lists(result)):
        ids = torch.tensor([tok(prompt).input_ids])
        out = large.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=MAX_NEW,
                             eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                             suppress_tokens=list(range(V, padded)))
        assert out[0, ids.shape[1]:].tolist()[: len(gen)] == gen


def assert_traces_equal(a: pd.DataFrame, b: pd.DataFrame, atol=1e-5):
    assert list(a.columns) == list(b.columns)
    assert len(a) == len(b)
    for col in a.columns:
        x, y = a[col], b[col]
        if col in ("s1_topk_probs",):
            for u, v in zip(x, y):
                assert max(abs(p - q) for p, q in zip(u, v)) < atol
        elif col == "s1_topk_ids":
            assert [list(u) for u in x] == [list(v) for v in y]
        elif pd.api.types.is_float_dtype(x):
            both_nan = x.isna() & y.isna()
            assert (both_nan | ((x - y).abs() <= atol + atol * y.abs())).all(), col
        else:
            assert x.tolist() == y.tolist(), col


def test_oracle_fast_path_equals_step_loop(systems):
    fast = run(systems, method="oracle", router="always", top_k=5)
    # threshold:1.01 consults at every position, but through the step loop
    loop = run(systems, method="oracle", router="threshold:1.01", top_k=5)
    assert token_lists(fast) == token_lists(loop)
    assert_traces_equal(fast.trace, loop.trace)
    assert fast.trace["s2_called"].all()


def stop_workload(systems, budget=20):
    """Stop strings that end every prompt's oracle output early: per prompt the text of its 3rd
    and 4th generated tokens (found from a run without stop strings)."""
    free = run(systems, method="oracle", max_new_tokens=budget)
    stops = []
    for g in free.generations:
        assert len(g["token_ids"]) == budget  # the tiny models never emit EOS here: the budget is reached
        text = systems.tokenizer.decode(g["token_ids"][2:4]).strip()
        assert text, "need a visible stop string"
        stops.append(text)
    return stops, free


def test_oracle_fast_path_stops_at_stop_strings_inside_generate(systems):
    """Fewer forwards of the large model with stop strings, and the trace of the step loop."""
    budget = 20
    stops, free = stop_workload(systems, budget)
    calls = []
    hook = systems.large.register_forward_hook(lambda *args: calls.append(1))
    try:
        run(systems, method="oracle", max_new_tokens=budget)
        without = len(calls)
        calls.clear()
        fast = run(systems, method="oracle", max_new_tokens=budget, stop=tuple(stops), top_k=3)
        with_stops = len(calls)
    finally:
        hook.remove()
    assert without == budget  # one forward per new token (the prefill gives the first)
    longest = max(len(g["token_ids"]) for g in fast.generations)
    assert longest <= 4 and with_stops == longest < without
    loop = run(systems, method="oracle", router="threshold:1.01", max_new_tokens=budget, stop=tuple(stops), top_k=3)
    assert token_lists(fast) == token_lists(loop)
    assert_traces_equal(fast.trace, loop.trace)
    for g, free_g, stop in zip(fast.generations, free.generations, stops):
        assert g["token_ids"] == free_g["token_ids"][: len(g["token_ids"])]  # a prefix of the free run
        assert stop not in g["text"]


def test_router_never_equals_small(systems):
    small = run(systems, method="single:small")
    for method in ("oracle", "contrastive"):
        never = run(systems, method=method, router="never")
        assert token_lists(never) == token_lists(small)
        assert not never.trace["s2_called"].any()
        assert never.trace["s2_top1_prob"].isna().all()
        assert_traces_equal(never.trace, small.trace)


def test_router_always_is_full_run(systems):
    for method in ("contrastive", "proxy"):
        full = run(systems, method=method, router="always")
        assert full.trace["s2_called"].all()
        assert token_lists(full) == token_lists(run(systems, method=method, router="threshold:1.01"))


def test_threshold_sweep_is_monotone(systems):
    calls = [run(systems, method="oracle", router=f"threshold:{t}").trace["s2_called"].mean()
             for t in (0.0, 0.05, 0.08, 0.12, 0.3, 1.01)]
    assert calls[0] == 0 and calls[-1] == 1
    assert all(a <= b for a, b in zip(calls, calls[1:])), calls


def test_trace_fields(systems):
    result = run(systems, method="contrastive", router="threshold:0.08", top_k=4)
    trace = result.trace
    assert (trace["intervened"] == (trace["token_id"] != trace["s1_token_id"])).all()
    assert trace["s2_top1_prob"].isna().tolist() == (~trace["s2_called"]).tolist()
    assert (trace["s1_top1_prob"] >= trace["s1_top2_prob"]).all()
    assert trace["round"].isna().all() and not trace["drafted"].any()
    assert all(len(p) == 4 and list(p) == sorted(p, reverse=True) for p in trace["s1_topk_probs"])
    for rid, gen in enumerate(result.generations):
        rows = trace[trace["request_id"] == rid]
        assert rows["token_id"].tolist() == gen["token_ids"]
        assert rows["position"].tolist() == list(range(len(gen["token_ids"])))
    assert result.metadata["method"] == "contrastive" and result.metadata["router"] == "threshold:0.08"
    assert set(result.metadata["models"]) == {"small", "large", "small_tuned"}


@pytest.mark.parametrize("method", ["single:small", "single:large", "oracle", "contrastive", "proxy"])
def test_method_logprobs_match_decoding(systems, method):
    """Teacher-forced on the decoded output, the argmax at each generated position is the token."""
    systems, method = alone(systems, method)
    config = DecodeConfig(method=method, max_new_tokens=MAX_NEW, progress=False)
    result = decode(systems, PROMPTS, config)
    tok = systems.tokenizer
    sequences = [tok(p).input_ids + g["token_ids"] for p, g in zip(PROMPTS, result.generations)]
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), tok.pad_token_id)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, s in enumerate(sequences):
        ids[row, width - len(s):] = torch.tensor(s)
        mask[row, width - len(s):] = 1
    logprobs = method_logprobs(systems, config, ids, mask)
    assert logprobs.shape == (len(sequences), width, systems.vocab_size)
    assert torch.allclose(logprobs.exp().sum(-1)[mask.bool()], torch.ones(int(mask.sum())), atol=1e-4)
    for row, g in enumerate(result.generations):
        n = len(g["token_ids"])
        predicted = logprobs[row, width - n - 1: width - 1].argmax(-1).tolist()
        assert predicted == g["token_ids"], (method, row)
