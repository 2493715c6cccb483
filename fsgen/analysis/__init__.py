"""Analyses of collaboration traces: per-job statistics, aggregate tables, scaling law, figures.

`analyze_job` turns one job's trace + metrics into the `stats.json` record that every aggregate
table is built from (so the aggregate step never re-reads traces).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from fsgen import atomic
from fsgen.analysis.routing import offline_router_curves
from fsgen.analysis.speculative import predicted_acceptance, speculative_record
from fsgen.analysis.stats import collaboration_stats, metric_status, primary_metric, read_metrics
from fsgen.analysis.uncertainty import (
    consulted_aurocs,
    intervention_position_shares,
    signal_aurocs,
    signal_histograms,
)

JOB_KEYS = ("benchmark", "method", "kind", "router", "large", "small", "large_params", "small_params", "k")


def analyze_job(
    trace: pd.DataFrame,
    job: dict,
    metadata: dict | None = None,
    metrics: dict | None = None,
    small_metrics: dict | None = None,
    large_metrics: dict | None = None,
    metric_name: str | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict:
    """Every per-job figure as one JSON-able dict.

    job: identity from the workflow (JOB_KEYS; kind = small|large|oracle|contrastive|proxy|
    speculative; router as in DecodeConfig). metadata: the trace's metadata (k for speculative).
    """
    missing = [k for k in ("benchmark", "method", "kind") if k not in job]
    if missing:
        raise KeyError(f"job identity lacks {missing} (got {sorted(job)})")
    metadata = metadata or {}
    params = metadata.get("params") if isinstance(metadata.get("params"), dict) else {}
    router = job.get("router") or metadata.get("router") or params.get("router") or "always"
    job = {key: job.get(key) for key in JOB_KEYS} | {"router": router}
    harness_entry = (metadata.get("harness") or {}).get("entry") or {}
    record = {
        "job": job,
        # every result file names the seeds that produced it
        "seeds": {"bootstrap": seed, "decode": metadata.get("seed", params.get("seed")),
                  "benchmark": harness_entry.get("seed")},
        "stats": collaboration_stats(trace, n_boot=n_boot, seed=seed),
    }
    record["accuracy"] = {
        "metric": metric_name,
        "method": primary_metric(metrics, metric_name),
        "small": primary_metric(small_metrics, metric_name),
        "large": primary_metric(large_metrics, metric_name),
        "status": metric_status(metrics, metric_name),
    }
    # requests lm-eval scored (metrics.json "n"): more than the trace's requests = empty generations
    record["stats"]["n_requests"] = (metrics or {}).get("n")
    kind, router = job["kind"], job["router"]
    if kind == "speculative":
        k = job.get("k") or metadata.get("k") or params.get("k")
        if k is None:
            raise KeyError(f"speculative job {job['method']}/{job['benchmark']}: no 'k' in trace metadata")
        job["k"] = int(k)
        record["speculative"], frequencies = speculative_record(trace, int(k), n_boot, seed)
        record["stats"].update(frequencies)
    if len(trace) == 0:
        return record
    record["auroc"] = signal_aurocs(trace)
    record["auroc_consulted"] = consulted_aurocs(trace)
    record["histograms"] = signal_histograms(trace)
    record["positions"] = intervention_position_shares(trace)
    if kind == "oracle" and router == "always":
        record["predicted_speculative"] = predicted_acceptance(trace)
        if trace["request_id"].nunique() >= 2:
            curves = offline_router_curves(trace, seed=seed)
            record["router_offline"] = curves.to_dict(orient="list")
    return record


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def _nan_to_none(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    return value


def write_json(data: dict, path) -> None:
    """Atomic JSON write (NaN/inf written as null, so the file is strict JSON)."""
    atomic.write_text(path, json.dumps(_nan_to_none(json.loads(json.dumps(data, default=_json_default))), indent=1))


def atomic_write_text(text: str, path) -> None:
    atomic.write_text(path, text)


def write_csv(df: pd.DataFrame, path) -> None:
    """Atomic CSV write."""
    atomic_write_text(df.to_csv(index=False), path)
