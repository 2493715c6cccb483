"""Router trade-offs: offline sweeps on oracle traces, and the online accuracy/call-rate table.

Offline: on an oracle trace (router `always`: System 2 decides every token, `intervened` marks
where it disagrees with System 1), a router that sends a position to System 2 when its
uncertainty score passes a threshold would *catch* the interventions at the positions it sends.
Sweeping the threshold gives share of tokens sent (x) against recall of interventions (y).
This is teacher-forced on the oracle's trajectory: a real run that skips System 2 diverges
after the first missed intervention.

Families: `threshold` (send when p₁ < T), `margin` (p₁ − p₂ < T), `entropy` (H > T), and `learned`
(logistic regression on System 1's top-k probabilities — `fsgen.decoding.routers.router_features`, as the
decode-time `learned:PATH` router — trained on a seeded split of requests; all families are
evaluated on the held-out requests).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from fsgen.analysis.stats import bool_column, pair_mask
from fsgen.analysis.uncertainty import uncertainty_scores

FAMILY_SIGNAL = {"threshold": "top1_prob", "margin": "margin", "entropy": "entropy"}
SHARE_GRID = np.linspace(0.0, 1.0, 51)  # shares of tokens sent at which curves are reported
ONLINE_COLUMNS = [
    "benchmark", "large", "small", "method", "variant", "router", "s2_call_rate", "accuracy", "freq_pooled"]


def sweep_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every achievable (share sent, recall, cut score) when sending positions with score ≥ cut.

    scores: [N] larger = send first; labels: [N] bool interventions. Starts at (0, 0, +inf).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    n, n_pos = len(scores), int(labels.sum())
    order = np.argsort(-scores, kind="stable")
    s_sorted, y_sorted = scores[order], labels[order]
    caught = np.cumsum(y_sorted)  # [N] interventions among the first i+1 sent
    # a cut can only fall between distinct scores
    last_of_value = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    idx = np.flatnonzero(last_of_value)
    share = np.r_[0.0, (idx + 1) / n] if n else np.array([0.0])
    recall = np.r_[0.0, caught[idx] / n_pos] if n_pos else np.full(len(idx) + 1, math.nan)
    cut = np.r_[np.inf, s_sorted[idx]]
    return share, recall, cut


def on_grid(share: np.ndarray, recall: np.ndarray, cut: np.ndarray, grid=SHARE_GRID) -> pd.DataFrame:
    """The best recall reachable while sending at most each grid share (step interpolation)."""
    pos = np.searchsorted(share, grid, side="right") - 1  # last curve point with share ≤ g
    return pd.DataFrame({"share_sent": share[pos], "recall": recall[pos], "cut": cut[pos], "grid": grid})


def topk_features(trace: pd.DataFrame) -> np.ndarray:
    """[N, F] learned-router features, as the decode-time learned router sees them.

    With top-k probabilities in the trace: `fsgen.decoding.routers.router_features` (System 1's top-k
    probabilities, the shortest recorded k). Without: (p₁, p₂, entropy).
    """
    if "s1_topk_probs" in trace.columns and trace["s1_topk_probs"].notna().all() and len(trace):
        from fsgen.decoding.routers import router_features

        top_k = min(len(p) for p in trace["s1_topk_probs"])
        return np.asarray(router_features(trace, top_k), dtype=np.float64)
    return trace[["s1_top1_prob", "s1_top2_prob", "s1_entropy"]].to_numpy(dtype=np.float64)


def split_requests(request_ids: np.ndarray, train_share: float = 0.5, seed: int = 0) -> np.ndarray:
    """[N] bool: row belongs to a training request (requests shuffled with `seed`)."""
    unique = np.unique(request_ids)
    rng = np.random.default_rng(seed)
    train = rng.permutation(unique)[: int(round(train_share * len(unique)))]
    return np.isin(request_ids, train)


def offline_router_curves(oracle_trace: pd.DataFrame, train_share: float = 0.5, seed: int = 0) -> pd.DataFrame:
    """Curves (router, share_sent, recall, threshold) of every family on the held-out requests.

    `threshold` is in the family's own units (p₁, margin, nats; learned: predicted probability):
    the signal value of the last position sent (the decode-time routers compare strictly, so a
    router reproducing the point needs T just past it).
    """
    labels = bool_column(oracle_trace, "intervened")
    is_train = split_requests(oracle_trace["request_id"].to_numpy(), train_share, seed)
    held = ~is_train
    if not held.any():
        raise ValueError("offline router sweep: no held-out requests (need ≥ 2 requests)")
    curves = []
    for family, signal in FAMILY_SIGNAL.items():
        scores = uncertainty_scores(oracle_trace, signal)
        share, recall, cut = sweep_curve(scores[held], labels[held])
        native = cut if signal == "entropy" else -cut  # back to p₁ / margin units
        curves.append(on_grid(share, recall, native).assign(router=family))
    features = topk_features(oracle_trace)
    y_train = labels[is_train]
    if y_train.any() and not y_train.all():
        model = LogisticRegression(max_iter=1000).fit(features[is_train], y_train)
        scores = model.predict_proba(features[held])[:, 1]
        share, recall, cut = sweep_curve(scores, labels[held])
        curves.append(on_grid(share, recall, cut).assign(router="learned"))
    out = pd.concat(curves, ignore_index=True).rename(columns={"cut": "threshold"})
    return out[["router", "grid", "share_sent", "recall", "threshold"]]


def recall_at(curves: pd.DataFrame, share: float) -> dict:
    """{router: best recall with at most `share` of tokens sent}."""
    out = {}
    for router, c in curves.groupby("router"):
        ok = c[c["share_sent"] <= share + 1e-12]
        out[router] = float(ok["recall"].max()) if len(ok) else math.nan
    return out


def online_tradeoff(jobs: pd.DataFrame) -> pd.DataFrame:
    """Accuracy against System 2 call rate for routed runs, with the `always` and `never` ends.

    jobs: the per-job table (columns benchmark, variant, method, router, large, small, accuracy,
    small_accuracy, s2_call_rate, freq_pooled). For each (benchmark, pair, method) that has a run
    with a router other than `always`, rows: every variant of that method (routed and `always`),
    plus a `never` point (System 2 never consulted: the small model alone, call rate 0; its
    variant is named `never`).
    """
    rows = []
    keys = ["benchmark", "large", "small", "method"]
    jobs = jobs[pair_mask(jobs)]
    for (benchmark, large, small, method), group in jobs.groupby(keys, sort=True):
        routers = group["router"].fillna("always")
        if (routers == "always").all():
            continue
        for _, job in group.iterrows():
            rows.append({"benchmark": benchmark, "large": large, "small": small, "method": method,
                         "variant": job["variant"], "router": job["router"] or "always",
                         "s2_call_rate": job["s2_call_rate"], "accuracy": job["accuracy"],
                         "freq_pooled": job["freq_pooled"]})
        rows.append({"benchmark": benchmark, "large": large, "small": small, "method": method,
                     "variant": "never", "router": "never", "s2_call_rate": 0.0,
                     "accuracy": group["small_accuracy"].iloc[0], "freq_pooled": 0.0})
    return pd.DataFrame(rows, columns=ONLINE_COLUMNS).sort_values(keys + ["s2_call_rate"], ignore_index=True)
