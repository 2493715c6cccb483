"""The FS-GEN authors' definitions beside ours (issue #13, fidelity items 2 and 3).

Speculative: the authors count corrections only (a rejected draft replaced by System 2's token);
fsgen's pooled frequency counts every token that differs from System 1's argmax, so a bonus token
System 1 would not have chosen counts too. Both are reported, with a third, every token System 2
emitted itself. Expected counts come from how the trace is built, not from the code under test.

AUROC of routed runs: on consulted positions only, checked against scikit-learn.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fsgen.analysis import analyze_job
from fsgen.analysis.summary import build_summary
from fsgen.analysis.tables import build_tables

K = 3
# per request, its rounds: (accepted drafts, end) with end one of
#   corr: a rejected draft replaced by System 2's token; bonus_diff / bonus_same: the bonus token
#   after K accepted drafts, differing from / equal to System 1's argmax; cut: stopped, no S2 token
REQUESTS = [
    [(3, "bonus_diff"), (1, "corr"), (0, "corr"), (3, "bonus_same")],
    [(2, "corr"), (3, "bonus_diff"), (0, "corr")],
    [(0, "corr"), (3, "bonus_same"), (2, "cut")],
]


def speculative_trace(requests) -> pd.DataFrame:
    rows = []
    for rid, rounds in enumerate(requests):
        position = 0
        for r, (accepted, end) in enumerate(rounds):
            ends = [] if end == "cut" else [end]
            for kind in ["draft"] * accepted + ends:
                token = 10 + position
                s1 = token + 1 if kind in ("corr", "bonus_diff") else token
                rows.append({"request_id": rid, "position": position, "token_id": token, "s1_token_id": s1,
                             "s2_called": True, "intervened": token != s1, "s1_top1_prob": 0.3 + 0.01 * position,
                             "s1_top2_prob": 0.2, "s1_entropy": 1.0 + 0.02 * position, "s2_top1_prob": 0.9,
                             "s2_entropy": 0.3, "round": r, "drafted": kind == "draft"})
                position += 1
    return pd.DataFrame(rows).astype({"round": "Int32"})


def expected_counts(requests) -> dict:
    rounds = [r for req in requests for r in req]
    return {"tokens": sum(a + (end != "cut") for a, end in rounds),
            "corrections": sum(end == "corr" for _, end in rounds),
            "s2_tokens": sum(end != "cut" for _, end in rounds),
            "interventions": sum(end in ("corr", "bonus_diff") for _, end in rounds)}


def job(kind="speculative", method="speculative", router="always") -> dict:
    return {"benchmark": "b", "method": method, "kind": kind, "router": router, "large": "L", "small": "S",
            "large_params": 4e9, "small_params": 1e9, "k": K}


def test_speculative_frequencies_both_definitions():
    trace = speculative_trace(REQUESTS)
    want = expected_counts(REQUESTS)
    assert (want["tokens"], want["corrections"], want["s2_tokens"], want["interventions"]) == (26, 5, 9, 7)
    stats = analyze_job(trace, job(), n_boot=200)["stats"]
    assert stats["n_corrections"] == want["corrections"] and stats["n_s2_tokens"] == want["s2_tokens"]
    assert stats["freq_corrections"] == pytest.approx(want["corrections"] / want["tokens"])
    assert stats["freq_s2_tokens"] == pytest.approx(want["s2_tokens"] / want["tokens"])
    assert stats["freq_pooled"] == pytest.approx(want["interventions"] / want["tokens"])  # unchanged definition
    for name in ("freq_corrections", "freq_s2_tokens"):
        assert stats[f"{name}_low"] <= stats[name] <= stats[f"{name}_high"]
        assert stats[f"{name}_low"] < stats[f"{name}_high"]  # three requests with different shares


def test_bonus_after_fewer_drafts_is_a_correction():
    """A round that kept fewer than K drafts ends in a correction, whatever its token."""
    requests = [[(2, "corr"), (3, "bonus_same")]]
    stats = analyze_job(speculative_trace(requests), job(), n_boot=20)["stats"]
    assert (stats["n_corrections"], stats["n_s2_tokens"]) == (1, 2)


def test_speculative_frequencies_reach_tables_and_summary():
    rec = analyze_job(speculative_trace(REQUESTS), job(), n_boot=100)
    tables = build_tables([rec])
    row = tables["jobs"].iloc[0]
    assert row["freq_corrections"] == pytest.approx(5 / 26) and row["freq_s2_tokens"] == pytest.approx(9 / 26)
    measured = tables["speculative"].iloc[0]
    assert measured["freq_corrections"] == pytest.approx(5 / 26) and measured["status"] == "ok"
    text = build_summary(tables, None)
    assert f"{5 / 26:.3f} counting corrections only" in text and f"{9 / 26:.3f} counting every System 2 token" in text


def routed_trace(seed: int = 3) -> tuple[pd.DataFrame, np.ndarray]:
    """A routed oracle run: System 2 consulted where p1 < 0.7; interventions only there."""
    rng = np.random.default_rng(seed)
    n = 120
    p1 = rng.uniform(0.2, 1.0, n)
    consulted = p1 < 0.7
    intervened = consulted & (rng.random(n) < 1.4 * (0.75 - p1))
    trace = pd.DataFrame({"request_id": np.arange(n) // 30, "position": np.arange(n) % 30, "token_id": 5,
                          "s1_token_id": np.where(intervened, 6, 5), "s2_called": consulted,
                          "intervened": intervened, "s1_top1_prob": p1, "s1_top2_prob": (1 - p1) * 0.6,
                          "s1_entropy": 2.0 * (1 - p1) + rng.uniform(0, 0.3, n), "s2_top1_prob": 0.9,
                          "s2_entropy": 0.2, "round": pd.array([pd.NA] * n, dtype="Int32"), "drafted": False})
    return trace, consulted


def test_auroc_on_consulted_positions_for_routed_runs():
    trace, consulted = routed_trace()
    rec = analyze_job(trace, job("oracle", "oracle_entropy", "threshold:0.7"), n_boot=20)
    labels, score = trace["intervened"].to_numpy(), -trace["s1_top1_prob"].to_numpy()
    want_consulted = roc_auc_score(labels[consulted], score[consulted])
    want_all = roc_auc_score(labels, score)
    assert rec["auroc_consulted"]["top1_prob"] == pytest.approx(want_consulted)
    assert rec["auroc"]["top1_prob"] == pytest.approx(want_all)
    assert want_all - want_consulted > 0.05  # the skipped positions inflate the all-positions AUROC
    tables = build_tables([rec])
    auroc = tables["auroc"].set_index("signal").loc["top1_prob"]
    assert auroc["auroc_consulted"] == pytest.approx(want_consulted) and auroc["n_consulted"] == consulted.sum()
    assert auroc["status"] == "ok"
    text = build_summary(tables, None)
    assert "consulted" in text and f"{want_consulted:.3f}" in text and f"{want_all:.3f}" not in text


def test_auroc_status_when_system2_never_consulted():
    trace, _ = routed_trace()
    trace = trace.assign(s2_called=False, intervened=False, s1_token_id=5)
    rec = analyze_job(trace, job("oracle", "oracle_entropy", "threshold:0.0"), n_boot=20)
    assert math.isnan(rec["auroc_consulted"]["entropy"])
    auroc = build_tables([rec])["auroc"]
    assert set(auroc["status"]) == {"System 2 never consulted"}
