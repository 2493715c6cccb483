"""Router specs, decisions on hand-made distributions, and the learned router round trip."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from fsgen.decoding.distributions import summarize
from fsgen.decoding.routers import LearnedRouter, build_router, train_learned_router


def summary_of(probs: list[list[float]], top_k: int = 0):
    return summarize(torch.log(torch.tensor(probs)), top_k)


# row 0: confident (0.9, 0.05, ...); row 1: two-way tie (0.45, 0.45); row 2: uniform over 4
PROBS = [[0.9, 0.05, 0.03, 0.02], [0.45, 0.45, 0.05, 0.05], [0.25, 0.25, 0.25, 0.25]]


def test_always_never():
    s = summary_of(PROBS)
    assert build_router("always").consult(s).tolist() == [True, True, True]
    assert build_router("never").consult(s).tolist() == [False, False, False]


def test_threshold_margin_entropy():
    s = summary_of(PROBS)
    assert build_router("threshold:0.5").consult(s).tolist() == [False, True, True]
    assert build_router("threshold:0.3").consult(s).tolist() == [False, False, True]
    assert build_router("margin:0.1").consult(s).tolist() == [False, True, True]
    assert build_router("margin:0.9").consult(s).tolist() == [True, True, True]
    # entropies: row 2 is log 4 ≈ 1.386 nats; row 0 ≈ 0.43
    assert build_router("entropy:1.0").consult(s).tolist() == [False, True, True]
    assert build_router(f"entropy:{math.log(4) - 1e-3}").consult(s).tolist() == [False, False, True]


@pytest.mark.parametrize("spec", ["threshold", "threshold:", "threshold:abc", "margin:nan", "entropy:1:2", "sometimes",
                                  "learned:", "Always", ""])
def test_malformed_specs(spec):
    with pytest.raises(ValueError, match="router"):
        build_router(spec)


def test_learned_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.joblib"):
        build_router(f"learned:{tmp_path / 'nope.joblib'}")


def synthetic_trace(n=400, k=10, seed=0):
    """Low top-1 probability → System 2 disagrees (an intervention), as FS-GEN reports."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        top1 = rng.uniform(0.05, 0.99)
        rest = np.sort(rng.dirichlet(np.ones(k - 1)) * (1 - top1))[::-1]
        probs = np.concatenate([[top1], np.minimum(rest, top1)])
        rows.append({"s1_topk_probs": probs.astype(np.float32).tolist(), "s2_called": True,
                     "intervened": bool(top1 < 0.5)})
    rows.append({"s1_topk_probs": [0.5] * k, "s2_called": False, "intervened": True})  # ignored: not consulted
    return pd.DataFrame(rows)


def test_learned_router_round_trip(tmp_path):
    path = tmp_path / "sub" / "router.joblib"
    saved = train_learned_router(synthetic_trace(), path, top_k=10, seed=0)
    assert path.exists() and saved["top_k"] == 10 and saved["threshold"] == 0.5
    router = build_router(f"learned:{path}")
    assert isinstance(router, LearnedRouter) and router.top_k == 10
    confident = [0.95] + [0.05 / 9] * 9
    unsure = [0.12] + [0.1] * 8 + [0.08]
    s = summary_of([confident, unsure], top_k=10)
    assert router.consult(s).tolist() == [False, True]
    with pytest.raises(ValueError, match="top-10"):
        router.consult(summary_of([confident], top_k=0))


def test_learned_router_refuses_bad_traces(tmp_path):
    trace = synthetic_trace()
    with pytest.raises(ValueError, match="top_k=20"):
        train_learned_router(trace, tmp_path / "r.joblib", top_k=20)
    with pytest.raises(ValueError, match="one class"):
        train_learned_router(trace.assign(intervened=True), tmp_path / "r.joblib")
    with pytest.raises(ValueError, match="s1_topk_probs"):
        train_learned_router(trace.drop(columns="s1_topk_probs"), tmp_path / "r.joblib")
    assert not (tmp_path / "r.joblib").exists()


def test_learned_router_in_decoding(tmp_path):
    """A learned router drives real decoding (needs System 1's top-k even when top_k=0)."""
    from fsgen.decoding.config import DecodeConfig
    from fsgen.decoding.engine import decode, load_systems
    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    family = build_tiny_family(tmp_path / "family")
    systems = load_systems("oracle", small=str(family["small"]), large=str(family["large"]))
    prompts = ["Tom has 3 apples.", "def add(a, b):", "Ann had 12 pens"]
    training = decode(systems, prompts, DecodeConfig(method="oracle", max_new_tokens=12, top_k=5, progress=False))
    trace = training.trace
    # the tiny random models almost always disagree; label by System 1's top-1 so both classes occur
    trace = trace.assign(intervened=trace["s1_top1_prob"] < trace["s1_top1_prob"].median())
    path = tmp_path / "router.joblib"
    train_learned_router(trace, path, top_k=5)
    result = decode(systems, prompts, DecodeConfig(method="oracle", router=f"learned:{path}", max_new_tokens=12,
                                                   progress=False))
    called = result.trace["s2_called"]
    assert 0 < called.sum() < len(called)
    assert "s1_topk_probs" not in result.trace.columns
