"""How much of tuning proxy tuning recovers: its gap share against the large model tuned directly.

Proxy tuning steers a large base model with a small tuned/base pair (l + α(s_tuned − s_base)); the
model it stands in for is the large model tuned directly. Per proxy job and metric:

    share = (proxy − large) / (large tuned − large)

the share of the gap between the large model and its tuned variant that proxy tuning closes (Liu
et al. 2024, "Tuning Language Models by Proxy", report 88-91% at 13B/70B). Intervals are paired
percentile bootstraps over documents: one resample of documents for all three runs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.stats import document_metrics
from fsgen.analysis.status import OK, explain_empty

COLUMNS = ["benchmark", "variant", "method", "large", "small", "large_tuned", "metric", "n_documents", "large_value",
           "proxy_value", "tuned_value", "gap", "share", "share_low", "share_high", "status"]


def gap_share(untuned: float, proxy: float, tuned: float) -> float | None:
    """(proxy − untuned) / (tuned − untuned); None when there is no gap to close."""
    gap = tuned - untuned
    return None if abs(gap) < 1e-12 else (proxy - untuned) / gap


def gap_share_interval(untuned, proxy, tuned, n_boot: int = 2000, seed: int = 0,
                       level: float = 0.95) -> tuple[float, float] | None:
    """Percentile bootstrap interval of gap_share over documents (paired: one resample of documents
    for all three runs). untuned, proxy, tuned: [P] per-document values. Resamples without a gap
    are skipped; None when fewer than half of them have one."""
    values = np.asarray([untuned, proxy, tuned], dtype=np.float64)  # [3, P]
    idx = np.random.default_rng(seed).integers(0, values.shape[1], size=(n_boot, values.shape[1]))  # [B, P]
    base, px, ref = values[:, idx].mean(axis=2)  # 3 x [B]
    has_gap = np.abs(ref - base) > 1e-12
    if has_gap.sum() < n_boot / 2:
        return None
    shares = (px[has_gap] - base[has_gap]) / (ref[has_gap] - base[has_gap])
    low, high = np.percentile(shares, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def gap_rows(job: dict, tuned_name: str, runs: dict[str, dict], n_boot: int = 2000, seed: int = 0,
             level: float = 0.95) -> list[dict]:
    """One row per metric all three runs report. runs: {"large", "proxy", "tuned"} ->
    document_metrics() of that run's scored samples ({metric: {(task, doc_id): value}})."""
    metrics = sorted(set(runs["large"]) & set(runs["proxy"]) & set(runs["tuned"]))
    rows = []
    for metric in metrics:
        docs = sorted(set(runs["large"][metric]) & set(runs["proxy"][metric]) & set(runs["tuned"][metric]))
        values = [[runs[name][metric][d] for d in docs] for name in ("large", "proxy", "tuned")]
        means = [float(np.mean(v)) if docs else np.nan for v in values]
        share = gap_share(*means) if docs else None
        interval = gap_share_interval(*values, n_boot=n_boot, seed=seed, level=level) if docs else None
        status = OK if share is not None else ("no documents in common" if not docs else
                                               "no gap: the tuned large model scores as the large model")
        rows.append({**{k: job.get(k) for k in ("benchmark", "variant", "method", "large", "small")},
                     "large_tuned": tuned_name, "metric": metric, "n_documents": len(docs),
                     "large_value": means[0], "proxy_value": means[1], "tuned_value": means[2],
                     "gap": means[2] - means[0], "share": np.nan if share is None else share,
                     "share_low": interval[0] if interval else np.nan,
                     "share_high": interval[1] if interval else np.nan, "status": status})
    return rows


def proxy_gap_table(items: list[dict], n_boot: int = 2000, seed: int = 0, level: float = 0.95,
                    why_none: str = "no proxy job with the large model's tuned variant decoded alone") -> pd.DataFrame:
    """items: {"job": the proxy job's identity, "tuned": the large model's tuned variant, and
    "large", "proxy", "tuned_samples": paths of the three runs' scored_samples.jsonl}."""
    rows = []
    for item in items:
        runs = {name: document_metrics(item[key])
                for name, key in (("large", "large"), ("proxy", "proxy"), ("tuned", "tuned_samples"))}
        rows += gap_rows(item["job"], item["tuned"], runs, n_boot=n_boot, seed=seed, level=level)
    return explain_empty(pd.DataFrame(rows, columns=COLUMNS), why_none)
