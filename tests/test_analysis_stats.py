"""Per-job statistics on hand-built traces whose answers are known."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fsgen.analysis.job import analyze_job
from fsgen.analysis.routing import offline_router_curves, on_grid, sweep_curve
from fsgen.analysis.acceptance import measured_acceptance, predicted_acceptance, simulate_rounds
from fsgen.analysis.stats import bootstrap_frequency, collaboration_stats, primary_metric
from fsgen.analysis.uncertainty import auroc, intervention_position_shares, signal_aurocs


def make_trace(interventions: list[list[int]], called=None, **extra) -> pd.DataFrame:
    """One request per list; 1 = intervened. Confidence is low exactly where intervened."""
    rows = []
    for rid, flags in enumerate(interventions):
        for pos, flag in enumerate(flags):
            rows.append({"request_id": rid, "position": pos, "token_id": 5, "s1_token_id": 5 + flag,
                         "s2_called": True if called is None else called[rid][pos], "intervened": bool(flag),
                         "s1_top1_prob": 0.4 if flag else 0.9, "s1_top2_prob": 0.3 if flag else 0.05,
                         "s1_entropy": 1.5 if flag else 0.3, "s2_top1_prob": 0.9, "s2_entropy": 0.2,
                         "round": None, "drafted": False})
    df = pd.DataFrame(rows)
    for key, values in extra.items():
        df[key] = values
    return df


# ------------------------------------------------------------------------------ frequencies
def test_pooled_and_per_sample_frequency():
    # request 0: 1 of 4 tokens; request 1: 2 of 2 tokens
    trace = make_trace([[0, 1, 0, 0], [1, 1]])
    s = collaboration_stats(trace, n_boot=200)
    assert s["n_tokens"] == 6 and s["n_interventions"] == 3 and s["n_samples"] == 2
    assert s["freq_pooled"] == pytest.approx(3 / 6)
    assert s["freq_per_sample"] == pytest.approx((1 / 4 + 2 / 2) / 2)
    assert s["interventions_per_sample"] == pytest.approx(1.5)
    assert s["s2_call_rate"] == 1.0 and s["tokens_per_s2_call"] == 1.0
    assert s["freq_pooled_low"] <= s["freq_pooled"] <= s["freq_pooled_high"]


def test_call_rate_with_router():
    called = [[True, False, False, True], [False, False]]
    trace = make_trace([[0, 0, 0, 1], [0, 0]], called=called)
    s = collaboration_stats(trace, n_boot=50)
    assert s["s2_call_rate"] == pytest.approx(2 / 6)
    assert s["tokens_per_s2_call"] == pytest.approx(3.0)


def test_bootstrap_is_deterministic_for_a_seed_and_brackets_the_value():
    rng = np.random.default_rng(1)
    tokens = rng.integers(10, 50, size=40)
    interventions = rng.binomial(tokens, 0.1)
    a = bootstrap_frequency(interventions, tokens, n_boot=500, seed=7)
    b = bootstrap_frequency(interventions, tokens, n_boot=500, seed=7)
    c = bootstrap_frequency(interventions, tokens, n_boot=500, seed=8)
    assert a == b
    assert a != c
    for ci in a:
        assert ci.low < ci.value < ci.high
    # a constant per-request frequency has a zero-width interval
    same = bootstrap_frequency(np.array([1, 2, 3]), np.array([10, 20, 30]), n_boot=100)
    assert same[0].low == pytest.approx(0.1) and same[0].high == pytest.approx(0.1)


def test_primary_metric_named_default_and_missing():
    metrics = {"task": "arith", "metrics": {"exact_match,strict-match": 0.41, "exact_match,flexible-extract": 0.45}}
    assert primary_metric(metrics, "exact_match,strict-match") == 0.41
    assert primary_metric(metrics) == 0.45  # flexible-extract is preferred
    assert math.isnan(primary_metric(metrics, "acc,none"))
    assert math.isnan(primary_metric(None))
    assert math.isnan(primary_metric({"metrics": {"exact_match,none": "n/a"}}))
    # another filter name of an accuracy metric is found; a generation-only task has none
    assert primary_metric({"metrics": {"exact_match,my-filter": 0.2, "exact_match_stderr,my-filter": 0.01}}) == 0.2
    assert math.isnan(primary_metric({"metrics": {"generated,none": 1.0, "response_chars,none": 812.0}}))


# ------------------------------------------------------------------------------ speculative
def speculative_trace(rounds: list[list[int]], request_id: int = 0) -> pd.DataFrame:
    """rounds: per round, 1 = accepted draft, 0 = System 2's own token (last of each round)."""
    rows = []
    pos = 0
    for r, flags in enumerate(rounds):
        for flag in flags:
            rows.append({"request_id": request_id, "position": pos, "round": r, "drafted": bool(flag),
                         "intervened": False, "s2_called": True})
            pos += 1
    return pd.DataFrame(rows)


def test_measured_acceptance_k3():
    # rounds accept 3 (+bonus), 0 (+correction), 2 (+correction): 4 + 1 + 3 = 8 tokens, 3 rounds
    trace = speculative_trace([[1, 1, 1, 0], [0], [1, 1, 0]])
    m = measured_acceptance(trace, k=3)
    assert m["rounds"] == 3
    assert m["acceptance_rate"] == pytest.approx(5 / 9)
    assert m["mean_accepted_length"] == pytest.approx(1 + 5 / 3)
    assert m["s2_passes_per_token"] == pytest.approx(3 / 8)
    assert m["accepted_hist"] == [1, 0, 1, 1]
    with pytest.raises(ValueError, match="k=2"):
        measured_acceptance(trace, k=2)


def test_simulate_rounds_by_hand():
    agree = np.array([1, 1, 0, 1, 1, 1, 1, 1, 0], bool)
    # K=2: [0,1] accepted 2, bonus at 2; start 3: accept 3,4, bonus 5; start 6: accept 6,7, bonus 8
    assert simulate_rounds(agree, 2).tolist() == [2, 2, 2]
    # K=4: start 0: run 2 → correction at 2; start 3: run 5 capped 4, bonus at 7; start 8: run 0
    assert simulate_rounds(agree, 4).tolist() == [2, 4, 0]
    # the run is cut by the end of the generation
    assert simulate_rounds(np.array([1, 1, 1], bool), 5).tolist() == [3]


def slow_predicted_accepted(agree, k):
    """Obvious reference: walk token by token."""
    out, pos, n = [], 0, len(agree)
    while pos < n:
        accepted = 0
        while accepted < k and pos < n and agree[pos]:
            accepted += 1
            pos += 1
        out.append(accepted)
        pos += 1
    return out


@pytest.mark.parametrize("seed", range(5))
def test_simulate_rounds_matches_slow_reference(seed):
    rng = np.random.default_rng(seed)
    agree = rng.random(rng.integers(1, 80)) < 0.8
    for k in range(1, 9):
        assert simulate_rounds(agree, k).tolist() == slow_predicted_accepted(agree, k)


def test_predicted_acceptance_from_oracle_trace():
    trace = make_trace([[0, 0, 1, 0], [0, 0, 0]])
    pred = {p["k"]: p for p in predicted_acceptance(trace, ks=(1, 2))}
    # K=2: request 0 → accept [2 (bonus at 2), 1 (end)]; request 1 → [2 (bonus at 2)]
    assert pred[2]["rounds"] == 3
    assert pred[2]["acceptance_rate"] == pytest.approx((2 + 1 + 2) / (3 * 2))
    # K=1: request 0 → [1 (bonus 1), 0 (correction 2), 1 (end)]; request 1 → [1 (bonus 1), 1 (end)]
    assert pred[1]["accepted_hist"] == [1, 4]


# ------------------------------------------------------------------------------ uncertainty
def test_auroc_matches_sklearn_and_handles_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.2
    scores = np.round(rng.normal(size=300) + labels, 1)  # rounded: many ties
    assert auroc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    assert auroc(np.ones(4), np.array([1, 0, 1, 0], bool)) == 0.5
    assert math.isnan(auroc(np.arange(3.0), np.zeros(3, bool)))


def test_signal_aurocs_perfect_separation():
    trace = make_trace([[0, 1, 0, 0, 1], [1, 0, 0]])
    au = signal_aurocs(trace)
    assert au["top1_prob"] == 1.0 and au["margin"] == 1.0 and au["entropy"] == 1.0
    assert au["n_intervened"] == 3 and au["n_kept"] == 5


def test_position_shares():
    # 10 tokens each: request 0 intervenes at positions 0 and 9, request 1 at position 9
    trace = make_trace([[1] + [0] * 8 + [1], [0] * 9 + [1]])
    pos = intervention_position_shares(trace)
    assert pos["share"][0] == pytest.approx(1 / 3) and pos["share"][9] == pytest.approx(2 / 3)
    assert sum(pos["share"]) == pytest.approx(1.0)
    assert pos["rate"][9] == 1.0 and pos["tokens"] == [2] * 10
    # 4 tokens: relative positions 0, .25, .5, .75 → bins 0, 2, 5, 7
    short = intervention_position_shares(make_trace([[1, 1, 1, 1]]))
    assert [i for i, s in enumerate(short["share"]) if s > 0] == [0, 2, 5, 7]


# ------------------------------------------------------------------------------ routers
def test_sweep_curve_by_hand():
    scores = np.array([0.9, 0.8, 0.8, 0.1])
    labels = np.array([True, False, True, False])
    share, recall, cut = sweep_curve(scores, labels)
    assert share.tolist() == [0.0, 0.25, 0.75, 1.0]
    assert recall.tolist() == [0.0, 0.5, 1.0, 1.0]
    grid = on_grid(share, recall, cut, grid=np.array([0.0, 0.5, 1.0]))
    assert grid["recall"].tolist() == [0.0, 0.5, 1.0]  # at most 50% sent: only the 0.9 position


def test_offline_router_curves_on_separable_trace():
    rng = np.random.default_rng(0)
    trace = make_trace([list((rng.random(30) < 0.2).astype(int)) for _ in range(10)])
    k = [[0.9, 0.05] if f else [0.95, 0.01] for f in trace["intervened"]]
    trace["s1_topk_probs"] = k
    curves = offline_router_curves(trace, seed=0)
    assert set(curves["router"]) == {"threshold", "margin", "entropy", "learned"}
    for router, c in curves.groupby("router"):
        # perfectly separable: sending exactly the intervened share catches all of them
        assert c["recall"].max() == 1.0
        assert c["recall"].is_monotonic_increasing
        best = c[c["recall"] == 1.0]["share_sent"].min()
        assert best <= 0.5, router


def test_analyze_job_oracle_record():
    trace = make_trace([[0, 1, 0, 0], [1, 0, 0], [0, 0, 1, 0, 0]])
    job = {"benchmark": "arith", "variant": "oracle", "method": "oracle", "large": "L", "small": "S",
           "large_params": 4e9, "small_params": 1e9}
    metrics = {"metrics": {"exact_match,none": 0.5}}
    rec = analyze_job(trace, job, {"router": "always"}, metrics, {"metrics": {"exact_match,none": 0.3}}, None,
                      "exact_match,none", n_boot=50)
    assert rec["job"]["router"] == "always"
    assert rec["accuracy"]["method"] == 0.5 and rec["accuracy"]["small"] == 0.3 and math.isnan(rec["accuracy"]["large"])
    assert len(rec["predicted_speculative"]) == 8 and "router_offline" in rec
    with pytest.raises(KeyError, match="variant"):
        analyze_job(trace, {"benchmark": "arith", "method": "oracle"})


def test_job_identity_names_variant_and_method():
    """The job dict the rules pass (fsgen.pipeline.jobs.job_identity) has exactly the analysis's keys:
    the variant (config entry, a router sweep's member) and its registry method."""
    from test_workflow_support import demo_config

    from fsgen.analysis.job import JOB_KEYS
    from fsgen.pipeline import jobs as pj

    config = demo_config()
    routed = next(j for j in pj.decode_jobs(config) if j["variant"].startswith("oracle_entropy-"))
    ident = pj.job_identity(config, routed)
    assert set(ident) == set(JOB_KEYS)
    assert ident["variant"] == routed["variant"] and ident["method"] == "oracle"
    assert ident["router"].startswith("entropy:") and ident["large"] == routed["large"]
    spec = pj.job_identity(config, next(j for j in pj.decode_jobs(config) if j["variant"] == "speculative"))
    assert spec["method"] == "speculative" and spec["k"] == config["methods"]["speculative"]["k"]
    single = pj.job_identity(config, pj.single_jobs(config)[0])
    assert (single["variant"], single["method"], single["router"]) == ("single", "single", "never")
    assert single["large"] == single["small"] and single["large_params"] == single["small_params"]


def test_single_model_runs_are_asked_of_the_registry():
    """A method registered with pair=False is a baseline to every table (no list in the analysis)."""
    from fsgen.analysis.stats import pair_mask
    from fsgen.decoding.methods import METHODS, Method, register_method

    register_method(Method("toy_lone_model", roles=("model",), system1="model", pair=False))
    try:
        jobs = pd.DataFrame({"method": ["toy_lone_model", "oracle", "single", "not_registered", "proxy"],
                             "large": ["L", "L", "L", "L", None], "small": ["S"] * 5})
        assert pair_mask(jobs).tolist() == [False, True, False, True, False]
    finally:
        del METHODS["toy_lone_model"]
