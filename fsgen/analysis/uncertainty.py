"""Is System 2 needed where System 1 is uncertain? Signals, AUROC, distributions, positions.

Signals of System 1's uncertainty at a position, each oriented so that larger = more uncertain:
- `top1_prob`: −p₁ (System 1's top-1 probability, negated),
- `margin`: −(p₁ − p₂),
- `entropy`: H in nats.
AUROC is the probability that a random intervened position scores higher than a random kept
one (ties count ½), i.e. the Mann–Whitney U statistic divided by n_pos·n_neg.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import rankdata

from fsgen.analysis.stats import bool_column

SIGNALS = ("top1_prob", "margin", "entropy")
N_POSITION_BINS = 10  # relative-position bins of 10% each
PROB_BINS = np.linspace(0.0, 1.0, 21)  # top-1 probability histogram edges
ENTROPY_MAX = 6.0  # entropy histogram upper edge in nats; larger values go to the last bin
ENTROPY_BINS = np.linspace(0.0, ENTROPY_MAX, 61)  # 0.1-nat bins


def uncertainty_scores(trace: pd.DataFrame, signal: str) -> np.ndarray:
    """[N] the signal at each row, larger = more uncertain."""
    p1 = trace["s1_top1_prob"].to_numpy(dtype=np.float64)
    if signal == "top1_prob":
        return -p1
    if signal == "margin":
        return -(p1 - trace["s1_top2_prob"].to_numpy(dtype=np.float64))
    if signal == "entropy":
        return trace["s1_entropy"].to_numpy(dtype=np.float64)
    raise ValueError(f"unknown signal {signal!r}; expected one of {SIGNALS}")


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for boolean `labels` (NaN if one class is empty)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    keep = np.isfinite(scores)
    scores, labels = scores[keep], labels[keep]
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = rankdata(scores)  # average ranks, so ties count ½
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def signal_aurocs(trace: pd.DataFrame) -> dict:
    """{signal: AUROC for predicting `intervened`} plus the class sizes."""
    labels = bool_column(trace, "intervened")
    out = {s: auroc(uncertainty_scores(trace, s), labels) for s in SIGNALS}
    out["n_intervened"] = int(labels.sum())
    out["n_kept"] = int((~labels).sum())
    return out


def consulted_aurocs(trace: pd.DataFrame) -> dict:
    """`signal_aurocs` over the positions where System 2 was consulted (`s2_called`).

    A router that skips System 2 makes the skipped positions non-interventions by construction
    (and skips exactly the confident ones), which inflates an AUROC over all positions; on the
    consulted positions the AUROC measures what the signal adds. For router `always` and
    speculative runs every position is consulted and the two agree. Adds `n_consulted`.
    """
    consulted = bool_column(trace, "s2_called")  # [N]
    out = signal_aurocs(trace[consulted])
    out["n_consulted"] = int(consulted.sum())
    return out


def auroc_status(aurocs: dict | None, n_tokens: int | None = None) -> str:
    """Why an AUROC record is NaN ("ok" when it is defined)."""
    if not aurocs:
        return "no generated tokens" if not n_tokens else "not computed"
    if aurocs.get("n_consulted") == 0:
        return "System 2 never consulted"
    n_pos, n_neg = aurocs.get("n_intervened") or 0, aurocs.get("n_kept") or 0
    if n_pos + n_neg == 0:
        return "no generated tokens"
    if n_pos == 0:
        return "no intervention (System 2 never changed a token)"
    if n_neg == 0:
        return "every position intervened"
    return "ok"


def signal_histograms(trace: pd.DataFrame) -> dict:
    """Histogram counts of top-1 probability and entropy, split by intervened / kept.

    Returns {"top1_prob": {"edges", "intervened", "kept"}, "entropy": {...}}; entropies above
    ENTROPY_MAX are counted in the last bin.
    """
    labels = bool_column(trace, "intervened")
    values = {
        "top1_prob": (trace["s1_top1_prob"].to_numpy(dtype=np.float64), PROB_BINS),
        "entropy": (np.minimum(trace["s1_entropy"].to_numpy(dtype=np.float64), ENTROPY_MAX), ENTROPY_BINS),
    }
    out = {}
    for name, (x, edges) in values.items():
        out[name] = {
            "edges": edges.tolist(),
            "intervened": np.histogram(x[labels], bins=edges)[0].tolist(),
            "kept": np.histogram(x[~labels], bins=edges)[0].tolist(),
        }
    return out


def relative_position_bins(trace: pd.DataFrame, n_bins: int = N_POSITION_BINS) -> np.ndarray:
    """[N] bin 0…n_bins−1 of each row's position relative to its generation's length.

    Relative position = position / (tokens generated for that request), in [0, 1).
    """
    length = trace.groupby("request_id")["position"].transform("size").to_numpy(dtype=np.float64)
    rel = trace["position"].to_numpy(dtype=np.float64) / length
    return np.minimum((rel * n_bins).astype(np.int64), n_bins - 1)


def intervention_position_shares(trace: pd.DataFrame, n_bins: int = N_POSITION_BINS) -> dict:
    """Share of all interventions, and intervention rate, in each relative-position bin."""
    bins = relative_position_bins(trace, n_bins)
    labels = bool_column(trace, "intervened")
    interventions = np.bincount(bins[labels], minlength=n_bins).astype(np.float64)  # [n_bins]
    tokens = np.bincount(bins, minlength=n_bins).astype(np.float64)  # [n_bins]
    total = interventions.sum()
    share = interventions / total if total else np.full(n_bins, math.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(tokens > 0, interventions / tokens, math.nan)
    return {"share": share.tolist(), "rate": rate.tolist(), "tokens": tokens.astype(int).tolist()}
