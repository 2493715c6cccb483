"""#13's analyses on hand-made data with answers worked out by hand: the authors' proxy definition
(fsgen.analysis.definitions), critical interventions (fsgen.analysis.critical) and rejection
under sampling (fsgen.analysis.sampling)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis.critical import critical_by_bin, critical_by_pair, critical_router_curves, critical_share
from fsgen.analysis.definitions import proxy_frequencies
from fsgen.analysis.routing import recall_at
from fsgen.analysis.sampling import rejection_by_pair, rejection_counts, seed_interval

# ---- proxy under the authors' definition -------------------------------------------------------


def proxy_trace() -> pd.DataFrame:
    # request 0: consulted everywhere; tuned argmax differs at 2 positions, base argmax at 1
    # request 1: not consulted at position 1; tuned differs at 1, base (where read) at 1
    token = [5, 6, 7, 8, 1, 2, 3]
    tuned = [5, 0, 7, 0, 1, 2, 9]
    base = [1, 6, 7, 8, 4, None, 3]
    return pd.DataFrame({"request_id": [0, 0, 0, 0, 1, 1, 1], "position": [0, 1, 2, 3, 0, 1, 2],
                         "token_id": token, "s1_token_id": tuned,
                         "s2_called": [True, True, True, True, True, False, True],
                         "intervened": [t != s for t, s in zip(token, tuned)],
                         "s1_base_token_id": pd.array(base, dtype="Int64")})


def test_proxy_frequencies_under_both_definitions():
    out = proxy_frequencies(proxy_trace(), n_boot=200)
    assert out["freq_proxy_tuned"] == pytest.approx(3 / 7) and out["n_interventions_tuned"] == 3
    assert out["freq_proxy_base"] == pytest.approx(2 / 7) and out["n_interventions_base"] == 2
    for name in ("freq_proxy_tuned", "freq_proxy_base"):
        assert out[f"{name}_low"] <= out[name] <= out[f"{name}_high"]


def test_proxy_base_frequency_needs_the_column():
    old = proxy_trace().drop(columns=["s1_base_token_id"])
    out = proxy_frequencies(old, n_boot=50)
    assert math.isnan(out["freq_proxy_base"]) and out["n_interventions_base"] is None
    assert out["freq_proxy_tuned"] == pytest.approx(3 / 7)
    damaged = proxy_trace()
    damaged.loc[2, "s1_base_token_id"] = pd.NA  # consulted, but no base argmax
    with pytest.raises(ValueError, match="s1_base_token_id"):
        proxy_frequencies(damaged, n_boot=10)


# ---- critical interventions --------------------------------------------------------------------


def counterfactual_rows() -> pd.DataFrame:
    return pd.DataFrame({
        "request_id": [0, 0, 0, 1, 1, 2],
        "position": [0, 5, 9, 1, 3, 2],
        "n_tokens": [10, 10, 10, 4, 4, 5],  # relative positions 0, .5, .9, .25, .75, .4
        "s1_top1_prob": [0.15, 0.55, 0.95, 0.25, 0.45, 0.85],
        "critical": [True, False, False, True, True, False],
    })


def test_critical_share():
    out = critical_share(counterfactual_rows(), n_boot=300)
    assert (out["n"], out["n_critical"]) == (6, 3) and out["share"] == pytest.approx(0.5)
    assert out["share_low"] <= 0.5 <= out["share_high"] and out["share_low"] < out["share_high"]
    assert math.isnan(critical_share(counterfactual_rows().iloc[:0])["share"])


def test_critical_by_relative_position_and_confidence():
    by_position = critical_by_bin(counterfactual_rows(), "position")
    assert by_position["n"].tolist() == [1, 1, 2, 1, 1]
    assert by_position["n_critical"].tolist() == [1, 1, 0, 1, 0]
    by_confidence = critical_by_bin(counterfactual_rows(), "confidence")
    assert by_confidence["n"].tolist() == [1, 1, 2, 0, 2]
    np.testing.assert_allclose(by_confidence["share"], [1.0, 1.0, 0.5, np.nan, 0.0])
    np.testing.assert_allclose(by_confidence["bin_low"], [0.0, 0.2, 0.4, 0.6, 0.8])
    certain = counterfactual_rows().assign(s1_top1_prob=1.0)  # the top edge falls in the last bin
    assert critical_by_bin(certain, "confidence")["n"].tolist() == [0, 0, 0, 0, 6]
    with pytest.raises(ValueError, match="position or confidence"):
        critical_by_bin(counterfactual_rows(), "entropy")


def test_critical_by_pair():
    a = counterfactual_rows().assign(benchmark="b", large="L", small="S")
    b = counterfactual_rows().iloc[:3].assign(benchmark="b", large="L", small="XS")
    out = critical_by_pair(pd.concat([a, b]), n_boot=100)
    assert out[["small", "n", "n_critical"]].values.tolist() == [["S", 6, 3], ["XS", 3, 1]]
    assert out["share"].tolist() == pytest.approx([0.5, 1 / 3])


def oracle_trace() -> pd.DataFrame:
    p1 = np.arange(1, 11) / 10  # rows 0..9: System 1 ever more confident
    return pd.DataFrame({"request_id": [0] * 5 + [1] * 5, "position": list(range(5)) * 2,
                         "s1_top1_prob": p1, "s1_top2_prob": (1 - p1) / 2, "s1_entropy": 3 - 2 * p1,
                         "intervened": np.isin(p1, [0.1, 0.2, 0.5, 0.7, 0.9])})


def test_router_recall_of_critical_interventions():
    # sampled interventions at p1 = 0.2, 0.7 (critical) and 0.5 (not): request 0 pos 1, request 1 pos 1 / 0
    frame = pd.DataFrame({"request_id": [0, 1, 0], "position": [1, 1, 4], "critical": [True, True, False]})
    curves = critical_router_curves(oracle_trace(), frame)
    assert set(curves["router"]) == {"threshold", "margin", "entropy"}
    critical = recall_at(curves[curves["target"] == "critical"], 0.2)
    everything = recall_at(curves[curves["target"] == "intervention"], 0.2)
    # the two most uncertain positions (p1 0.1, 0.2) catch 1 of 2 critical, 2 of 5 interventions
    assert critical == pytest.approx({"threshold": 0.5, "margin": 0.5, "entropy": 0.5})
    assert everything == pytest.approx({"threshold": 0.4, "margin": 0.4, "entropy": 0.4})
    at_07 = recall_at(curves[curves["target"] == "critical"], 0.7)["threshold"]
    assert at_07 == pytest.approx(1.0)
    assert recall_at(curves[curves["target"] == "intervention"], 0.7)["threshold"] == pytest.approx(0.8)
    wrong = frame.assign(position=[1, 9, 4])  # a row that is not in the trace
    with pytest.raises(ValueError, match="not positions"):
        critical_router_curves(oracle_trace(), wrong)


# ---- collaboration under sampling --------------------------------------------------------------


def speculative_trace() -> pd.DataFrame:
    # k = 2. request 0: round 0 accepts both (then a bonus), round 1 accepts one (then a
    # correction), round 2 accepts none (a correction); request 1: a correction, then 2 + bonus.
    rows = [(0, 0, True), (0, 0, True), (0, 0, False), (0, 1, True), (0, 1, False), (0, 2, False),
            (1, 0, False), (1, 1, True), (1, 1, True), (1, 1, False)]
    return pd.DataFrame({"request_id": [r for r, _, _ in rows], "round": pd.array([k for _, k, _ in rows], dtype="Int32"),
                         "drafted": [d for _, _, d in rows]})


def test_rejection_counts():
    out = rejection_counts(speculative_trace(), k=2)
    # accepted drafts 3 + 2, corrections 2 + 1: judged 8, rejected 3
    assert out == {"tokens": 10, "judged": 8, "rejected": 3, "rejection_share": pytest.approx(3 / 8)}


def test_rejection_by_pair_with_interval_across_seeds():
    runs = pd.DataFrame([
        ("b", "L", "S", "spec_s-seed0", 1.0, 100, 30),
        ("b", "L", "S", "spec_s-seed1", 1.0, 200, 80),
        ("b", "L", "S", "spec_s-seed2", 1.0, 50, 25),
        ("b", "L", "S", "speculative", 0.0, 300, 60),
        ("b", "L", "S", "speculative_k3", 0.0, 100, 40),
        ("b", "L", "XS", "spec_s-seed0", 1.0, 40, 10),
    ], columns=["benchmark", "large", "small", "variant", "temperature", "judged", "rejected"])
    out = rejection_by_pair(runs).set_index("small")
    s = out.loc["S"]
    assert s["setting"] == "spec_s" and s["n_seeds"] == 3
    assert s["rejection_share"] == pytest.approx(0.4) and s["rejection_sd"] == pytest.approx(0.1)
    half = 4.302652729911275 * 0.1 / math.sqrt(3)  # t(0.975, 2 degrees of freedom)
    assert (s["rejection_low"], s["rejection_high"]) == pytest.approx((0.4 - half, 0.4 + half))
    assert s["greedy_mismatch_share"] == pytest.approx(100 / 400)  # pooled over the greedy runs
    xs = out.loc["XS"]
    assert xs["rejection_share"] == pytest.approx(0.25) and xs["n_seeds"] == 1
    assert math.isnan(xs["rejection_low"]) and math.isnan(xs["greedy_mismatch_share"])


def test_seed_interval_of_one_seed():
    mean, sd, low, high = seed_interval([0.3])
    assert mean == pytest.approx(0.3) and all(math.isnan(v) for v in (sd, low, high))
