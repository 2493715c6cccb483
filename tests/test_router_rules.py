"""Routers on summaries placed exactly on their thresholds, the one spec parser, the learned
router's checks, and `summarize` (what the trace records of a distribution) against a written-out
reference. No models: the mutation-testing selection of `fsgen/decoding/routers.py` and
`fsgen/decoding/distributions.py` with tests/test_routers.py (docs/testing.md)."""

from __future__ import annotations

import math

import joblib
import numpy as np
import pandas as pd
import pytest
import torch

from fsgen.decoding.distributions import Summary, summarize
from fsgen.decoding.routers import (
    AlwaysRouter,
    EntropyRouter,
    LearnedRouter,
    MarginRouter,
    NeverRouter,
    RouterSpec,
    ThresholdRouter,
    build_router,
    parse_router_spec,
    router_features,
    train_learned_router,
)

# ---------------------------------------------------------------- summarize


def summary_reference(probs: list[float], top_k: int) -> dict:
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    return {"argmax": order[0], "top1": probs[order[0]], "top2": probs[order[1]],
            "entropy": -sum(p * math.log(p) for p in probs if p > 0),
            "topk_ids": order[:top_k], "topk_probs": [probs[i] for i in order[:top_k]]}


ROWS = [[0.05, 0.6, 0.0, 0.35], [0.26, 0.19, 0.3, 0.25], [0.0, 0.0, 1.0, 0.0]]  # zeros: log-prob -inf


@pytest.mark.parametrize("top_k", [0, 1, 3])
def test_summarize_equals_the_reference(top_k):
    got = summarize(torch.log(torch.tensor(ROWS)), top_k)
    for b, probs in enumerate(ROWS):
        want = summary_reference(probs, top_k)
        assert got.argmax[b].item() == want["argmax"]
        assert got.top1_prob[b].item() == pytest.approx(want["top1"], rel=1e-6)
        assert got.top2_prob[b].item() == pytest.approx(want["top2"], rel=1e-6)
        assert got.entropy[b].item() == pytest.approx(want["entropy"], abs=1e-6)  # 0·log 0 = 0, not NaN
        if top_k:
            real = sum(p > 0 for p in want["topk_probs"])  # ids of zero-probability ties are any order
            assert got.topk_ids[b].tolist()[:real] == want["topk_ids"][:real]
            assert got.topk_probs[b].tolist() == pytest.approx(want["topk_probs"], rel=1e-6)
    if not top_k:
        assert got.topk_probs is None and got.topk_ids is None
        default = summarize(torch.log(torch.tensor(ROWS)))  # no top-k unless asked for
        assert default.topk_probs is None and default.topk_ids is None
    assert got.topk_probs is None or got.topk_probs.shape == (3, top_k)


# ---------------------------------------------------------------- routers on their thresholds


def exact_summary(top1: list[float], top2: list[float], entropy: list[float]) -> Summary:
    """A summary with values given exactly (binary fractions), to place rows on a threshold."""
    return Summary(argmax=torch.zeros(len(top1), dtype=torch.long), top1_prob=torch.tensor(top1),
                   top2_prob=torch.tensor(top2), entropy=torch.tensor(entropy))


def test_threshold_router_consults_strictly_below():
    summary = exact_summary([0.25, 0.5, 0.75], [0.125, 0.25, 0.125], [1.0, 1.0, 1.0])
    assert ThresholdRouter(0.5).consult(summary).tolist() == [True, False, False]


def test_margin_router_uses_top1_minus_top2_strictly():
    # margins 0.125, 0.25, 0.625
    summary = exact_summary([0.25, 0.5, 0.75], [0.125, 0.25, 0.125], [1.0, 1.0, 1.0])
    assert MarginRouter(0.25).consult(summary).tolist() == [True, False, False]
    assert MarginRouter(0.5).consult(summary).tolist() == [True, True, False]


def test_entropy_router_consults_strictly_above():
    summary = exact_summary([0.5] * 3, [0.25] * 3, [0.5, 1.25, 2.0])
    assert EntropyRouter(1.25).consult(summary).tolist() == [False, False, True]


def test_always_and_never_give_a_bool_per_row():
    summary = exact_summary([0.5, 0.9], [0.25, 0.05], [1.0, 0.2])
    always, never = AlwaysRouter().consult(summary), NeverRouter().consult(summary)
    assert always.dtype == torch.bool and always.tolist() == [True, True]
    assert never.dtype == torch.bool and never.tolist() == [False, False]


# ---------------------------------------------------------------- the spec parser


@pytest.mark.parametrize("spec, kind, threshold, slug", [
    ("always", "always", None, "always"),
    ("never", "never", None, "never"),
    (" threshold:0.3 ", "threshold", 0.3, "threshold0.3"),
    ("margin:0.05", "margin", 0.05, "margin0.05"),
    ("entropy:0.50", "entropy", 0.5, "entropy0.50"),
    ("entropy:0", "entropy", 0.0, "entropy0"),
    ("learned:results/my router+v2.joblib", "learned", None, "learnedmy-router-v2"),
])
def test_parse_router_spec(spec, kind, threshold, slug):
    parsed = parse_router_spec(spec)
    assert (parsed.kind, parsed.threshold, parsed.slug) == (kind, threshold, slug)
    assert parsed.path == ("results/my router+v2.joblib" if kind == "learned" else None)


@pytest.mark.parametrize("spec, message", [
    (0.5, "router must be a string like 'entropy:1.0', got 0.5"),
    ("random:0.3", "unknown router 'random' in 'random:0.3'; expected one of always, never, threshold, margin, "
                   "entropy, learned"),
    ("never:1", "router 'never' takes no argument, got 'never:1'"),
    ("always:", "router 'always' takes no argument, got 'always:'"),
    ("learned:", "router 'learned' needs a path, e.g. 'learned:results/router.joblib'"),
    ("margin:x", "malformed threshold 'x' in router 'margin:x'; expected a number, e.g. 'margin:0.5'"),
    ("entropy:-0.1", "threshold in router 'entropy:-0.1' must be a finite number ≥ 0"),
    ("threshold:inf", "threshold in router 'threshold:inf' must be a finite number ≥ 0"),
])
def test_parse_router_spec_says_what_is_wrong(spec, message):
    with pytest.raises(ValueError) as err:
        parse_router_spec(spec)
    assert str(err.value) == message


def test_build_router_from_a_spec_or_a_parsed_spec():
    assert isinstance(build_router("always"), AlwaysRouter) and isinstance(build_router("never"), NeverRouter)
    assert build_router("threshold:0.3") == ThresholdRouter(0.3)
    assert build_router(RouterSpec("margin", threshold=0.2, text_arg="0.2")) == MarginRouter(0.2)
    assert build_router(parse_router_spec("entropy:1.5")) == EntropyRouter(1.5)


# ---------------------------------------------------------------- the learned router


class FixedModel:
    """A stand-in classifier: P(intervention) is the first feature."""

    def predict_proba(self, features):
        return np.stack([1 - features[:, 0], features[:, 0]], axis=1)


def test_learned_router_checks_its_file_and_consults_above_its_threshold(tmp_path):
    bad = tmp_path / "bad.joblib"
    joblib.dump(["not", "a", "router"], bad)
    with pytest.raises(ValueError, match="is not a router saved by fsgen.decoding.routers.train_learned_router"):
        LearnedRouter(bad)
    for incomplete in ({"model": FixedModel()}, {"top_k": 2}):
        joblib.dump(incomplete, bad)
        with pytest.raises(ValueError, match="is not a router"):
            LearnedRouter(bad)
    path = tmp_path / "r.joblib"
    joblib.dump({"model": FixedModel(), "top_k": 2}, path)  # no threshold stored: 0.5
    router = LearnedRouter(path)
    assert (router.top_k, router.threshold, router.path) == (2, 0.5, str(path))
    summary = Summary(argmax=torch.zeros(3, dtype=torch.long), top1_prob=torch.zeros(3), top2_prob=torch.zeros(3),
                      entropy=torch.zeros(3), topk_probs=torch.tensor([[0.25, 0.1], [0.5, 0.1], [0.75, 0.1]]),
                      topk_ids=torch.zeros(3, 2, dtype=torch.long))
    assert router.consult(summary).tolist() == [False, False, True]  # > threshold, not ≥
    joblib.dump({"model": FixedModel(), "top_k": 2, "threshold": 0.125}, path)
    assert LearnedRouter(path).consult(summary).tolist() == [True, True, True]
    short = Summary(**{**summary.__dict__, "topk_probs": summary.topk_probs[:, :1]})
    with pytest.raises(ValueError, match=f"learned router {path} needs System 1's top-2 probabilities"):
        router.consult(short)


def test_router_features():
    trace = pd.DataFrame({"s1_topk_probs": [[0.5, 0.25, 0.125], [0.75, 0.125]]})
    features = router_features(trace, 2)
    np.testing.assert_array_equal(features, np.array([[0.5, 0.25], [0.75, 0.125]], np.float32))
    assert features.dtype == np.float32
    with pytest.raises(ValueError, match="^trace records top-3 probabilities; the router needs top_k=4$"):
        router_features(trace, 4)  # the first short row's length
    with pytest.raises(ValueError, match="^trace has no s1_topk_probs column; decode with top_k > 0 to train a "
                                         "learned router$"):
        router_features(pd.DataFrame({"x": [1]}), 2)
    empty = router_features(trace.iloc[:0], 3)
    assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_train_learned_router_uses_consulted_rows_only(tmp_path):
    rng = np.random.default_rng(0)
    top1 = rng.uniform(0.05, 0.95, 300)
    consulted = pd.DataFrame({"s1_topk_probs": [[p, 1 - p] for p in top1], "s2_called": True,
                              "intervened": top1 < 0.5})
    # unconsulted rows with the opposite labels: they must not be learned from
    hidden = consulted.assign(s2_called=False, intervened=~consulted["intervened"])
    saved = train_learned_router(pd.concat([consulted, hidden, hidden]), tmp_path / "r.joblib", top_k=2,
                                 threshold=0.25)
    assert saved["top_k"] == 2 and saved["threshold"] == 0.25
    router = build_router(f"learned:{tmp_path / 'r.joblib'}")
    summary = summarize(torch.log(torch.tensor([[0.1, 0.9], [0.9, 0.1]])), top_k=2)  # top-1 0.9 both: ids differ
    assert router.consult(summary).tolist() == [False, False]
    unsure = summarize(torch.log(torch.tensor([[0.45, 0.55]])), top_k=2)
    assert router.consult(unsure).tolist() == [True]
    with pytest.raises(ValueError, match="^no trace rows with s2_called; a learned router needs positions where "
                                         "System 2 was consulted$"):
        train_learned_router(hidden, tmp_path / "x.joblib", top_k=2)
    with pytest.raises(ValueError, match="^trace rows have only one class of 'intervened'; cannot train a learned "
                                         "router$"):
        train_learned_router(consulted.assign(intervened=True), tmp_path / "x.joblib", top_k=2)
    assert not (tmp_path / "x.joblib").exists()


def test_train_learned_router_defaults_and_null_labels(tmp_path):
    """top_k 10 by default; a null `intervened` counts as no intervention (as the statistics read it)."""
    rng = np.random.default_rng(1)
    top1 = rng.uniform(0.05, 0.95, 200)
    rows = pd.DataFrame({"s1_topk_probs": [[p] + [(1 - p) / 9] * 9 for p in top1], "s2_called": True,
                         "intervened": [True if p < 0.5 else None for p in top1]})  # object column with nulls
    saved = train_learned_router(rows, tmp_path / "r.joblib")
    assert saved["top_k"] == 10 and saved["threshold"] == 0.5
    assert list(saved["model"].classes_) == [False, True]
