"""Per-job collaboration statistics over one trace, with seeded cluster-bootstrap intervals.

Conventions (docs/analysis.md):
- an *intervention* is a generated token that differs from System 1's own argmax (`intervened`);
- *pooled* frequency = all interventions / all generated tokens of the job;
- *per-sample* frequency = mean over requests of (interventions / tokens of that request);
- 95% intervals resample whole requests (tokens of one generation are not independent),
  percentile method, `n_boot` replicates from `numpy.random.default_rng(seed)`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fsgen.decoding.methods import METHODS

# metric names tried, in order, when a benchmark names no primary metric
DEFAULT_METRIC_PREFERENCE = (
    "exact_match,flexible-extract",
    "exact_match,strict-match",
    "exact_match,none",
    "pass@1,none",
    "pass_at_1,none",
    "acc,none",
)
ACCURACY_METRICS = ("exact_match", "acc", "acc_norm", "pass_at_1", "pass@1")  # fallback metric names


@dataclass
class BootstrapCI:
    value: float  # the statistic on the full sample
    low: float  # 2.5th percentile of the bootstrap replicates
    high: float  # 97.5th percentile


def bool_column(df: pd.DataFrame, name: str) -> np.ndarray:
    """A boolean trace column as a numpy bool array (nulls read as False)."""
    if name not in df.columns:
        raise KeyError(f"trace has no column {name!r} (columns: {list(df.columns)})")
    return df[name].fillna(False).to_numpy(dtype=bool)


def per_request_counts(trace: pd.DataFrame) -> pd.DataFrame:
    """One row per request: tokens, interventions, System 2 positions, speculative rounds."""
    work = pd.DataFrame(
        {
            "request_id": trace["request_id"].to_numpy(),
            "tokens": 1,
            "interventions": bool_column(trace, "intervened").astype(np.int64),
            "s2_positions": bool_column(trace, "s2_called").astype(np.int64),
        }
    )
    counts = work.groupby("request_id", sort=True)[["tokens", "interventions", "s2_positions"]].sum()
    if "round" in trace.columns and trace["round"].notna().any():
        rounds = trace.dropna(subset=["round"]).groupby("request_id")["round"].nunique()
        counts["rounds"] = rounds.reindex(counts.index).fillna(0).astype(np.int64)
    return counts.reset_index()


def bootstrap_frequency(
    interventions: np.ndarray, tokens: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[BootstrapCI, BootstrapCI]:
    """(pooled, per-sample mean) intervention frequency with request-level bootstrap CIs.

    interventions, tokens: [R] per-request counts (tokens > 0).
    """
    interventions = np.asarray(interventions, dtype=np.float64)  # [R]
    tokens = np.asarray(tokens, dtype=np.float64)  # [R]
    n_req = len(tokens)
    if n_req == 0 or tokens.sum() == 0:
        nan = BootstrapCI(math.nan, math.nan, math.nan)
        return nan, nan
    per_sample = interventions / tokens  # [R]
    pooled_value = interventions.sum() / tokens.sum()
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_req, size=(n_boot, n_req))  # [B, R] resampled request indices
    pooled_reps = interventions[idx].sum(axis=1) / tokens[idx].sum(axis=1)  # [B]
    mean_reps = per_sample[idx].mean(axis=1)  # [B]

    def ci(value, reps):
        low, high = np.percentile(reps, [2.5, 97.5])
        return BootstrapCI(float(value), float(low), float(high))

    return ci(pooled_value, pooled_reps), ci(per_sample.mean(), mean_reps)


def collaboration_stats(trace: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """Scalar statistics of one job's trace (all methods).

    s2_calls counts System 2 invocations: verification rounds for speculative traces (one
    forward pass checks a whole draft), consulted positions otherwise.
    """
    counts = per_request_counts(trace)
    n_tokens = int(counts["tokens"].sum())
    n_interventions = int(counts["interventions"].sum())
    n_s2_positions = int(counts["s2_positions"].sum())
    n_s2_calls = int(counts["rounds"].sum()) if "rounds" in counts else n_s2_positions
    pooled, per_sample = bootstrap_frequency(counts["interventions"], counts["tokens"], n_boot, seed)
    return {
        "n_samples": int(len(counts)),
        "n_tokens": n_tokens,
        "n_interventions": n_interventions,
        "freq_pooled": pooled.value,
        "freq_pooled_low": pooled.low,
        "freq_pooled_high": pooled.high,
        "freq_per_sample": per_sample.value,
        "freq_per_sample_low": per_sample.low,
        "freq_per_sample_high": per_sample.high,
        "s2_call_rate": n_s2_positions / n_tokens if n_tokens else math.nan,
        "s2_calls": n_s2_calls,
        "tokens_per_s2_call": n_tokens / n_s2_calls if n_s2_calls else math.nan,
        "interventions_per_sample": n_interventions / len(counts) if len(counts) else math.nan,
        "tokens_per_sample": n_tokens / len(counts) if len(counts) else math.nan,
    }


def read_metrics(path) -> dict:
    with open(path) as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object with a 'metrics' dict")
    return data


def primary_metric(metrics: dict | None, name: str | None = None) -> float:
    """The benchmark's headline accuracy from a metrics.json dict; NaN when absent.

    `name` is the lm-eval key (e.g. "exact_match,flexible-extract"); without it the first key of
    DEFAULT_METRIC_PREFERENCE present is used, else the first (sorted) key whose metric part is in
    ACCURACY_METRICS (so generation-only tasks such as MT-Bench give NaN, not a length).
    """
    if not metrics:
        return math.nan
    values = metrics.get("metrics", metrics)
    if not isinstance(values, dict):
        return math.nan
    if name:
        names = [name]
    else:  # the preferred keys, then any accuracy-like key with another filter name
        names = list(DEFAULT_METRIC_PREFERENCE) + sorted(
            k for k in values if "stderr" not in k and k.split(",")[0] in ACCURACY_METRICS)
    for key in names:
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return math.nan


def metric_status(metrics: dict | None, name: str | None = None) -> str:
    """Why `primary_metric` gives NaN for this metrics.json dict ("ok" when it gives a number)."""
    if not metrics:
        return "no metrics.json"
    if math.isfinite(primary_metric(metrics, name)):
        return "ok"
    if name:
        return f"metric {name!r} not in metrics.json"
    return "no accuracy metric in metrics.json (generation-only task)"


def single_model(method) -> bool:
    """A method that runs one model alone (a baseline, not a collaboration), by the registry
    `fsgen.decoding.methods` (`pair=False`); a name the registry does not know is not one."""
    known = METHODS.get(method) if isinstance(method, str) else None
    return known is not None and not known.pair


def single_model_rows(methods: pd.Series) -> pd.Series:
    """[rows] bool: the rows of a `method` column that are single-model runs."""
    return methods.map(single_model).astype(bool)


def pair_mask(jobs: pd.DataFrame) -> pd.Series:
    """Rows of a per-job table that are collaborations between two models (not single runs)."""
    return ~single_model_rows(jobs["method"]) & jobs["large"].notna() & jobs["small"].notna()


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def document_metrics(scored_samples_path) -> dict[str, dict[tuple, float]]:
    """lm-eval's per-document metric values of a scored run (scored_samples.jsonl: one row per
    document and filter): {"name,filter": {(task, doc_id): value}}."""
    values: dict[str, dict[tuple, float]] = {}
    for sample in read_jsonl(scored_samples_path):
        for name in sample.get("metrics", []):
            key = f"{name},{sample.get('filter', 'none')}"
            values.setdefault(key, {})[(sample["task"], sample["doc_id"])] = float(sample[name])
    return values

