"""One job's analysis: its trace + metrics -> the `stats.json` record.

`analyze_job` computes every per-job figure once, so the aggregate step builds its tables from
these records and never re-reads traces. The record's `job` is the job's identity (JOB_KEYS):
`variant` is the configured instance (a config `methods:` entry, e.g. `oracle_entropy-entropy0.5`),
`method` the algorithm of the registry `fsgen.decoding.methods` (single-model baselines: both
`single`).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from fsgen import atomic
from fsgen.analysis.routing import offline_router_curves
from fsgen.analysis.acceptance import predicted_acceptance, speculative_record
from fsgen.analysis.definitions import proxy_frequencies
from fsgen.analysis.requests import costs_record, job_requests, requests_record
from fsgen.analysis.sampling import rejection_counts
from fsgen.analysis.stats import collaboration_stats, metric_status, primary_metric
from fsgen.analysis.uncertainty import (
    consulted_aurocs,
    intervention_position_shares,
    signal_aurocs,
    signal_histograms,
)

JOB_KEYS = ("benchmark", "variant", "method", "router", "large", "small", "large_params", "small_params", "k")


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
    outcomes: tuple[pd.DataFrame | None, str] | None = None,
    wall_s: float | None = None,
) -> dict:
    """Every per-job figure as one JSON-able dict.

    job: identity from the workflow (JOB_KEYS, `fsgen.pipeline.jobs.job_identity`: variant, method
    of the registry, router as in DecodeConfig). metadata: the trace's metadata (k for speculative,
    the decode settings). outcomes: (request_id, doc, correct of every request, why `correct` is
    missing) from `fsgen.analysis.requests.request_outcomes`; wall_s: the decode job's seconds.
    """
    missing = [k for k in ("benchmark", "variant", "method") if k not in job]
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
        "decode": {"temperature": params.get("temperature")},
    }
    record["accuracy"] = {
        "metric": metric_name,
        "method": primary_metric(metrics, metric_name),  # this job's own (beside the two baselines)
        "small": primary_metric(small_metrics, metric_name),
        "large": primary_metric(large_metrics, metric_name),
        "status": metric_status(metrics, metric_name),
    }
    # requests lm-eval scored (metrics.json "n"): more than the trace's requests = empty generations
    record["stats"]["n_requests"] = (metrics or {}).get("n")
    method, router = job["method"], job["router"]
    _method_figures(record, trace, metadata, params, n_boot, seed)
    frame, correct_status = outcomes if outcomes is not None else (None, "no generations.jsonl")
    rows = job_requests(trace, job, metadata, frame)
    record["requests"] = requests_record(rows)
    record["costs"] = costs_record(rows, correct_status, wall_s)
    if len(trace) == 0:
        return record
    record["auroc"] = signal_aurocs(trace)
    record["auroc_consulted"] = consulted_aurocs(trace)
    record["histograms"] = signal_histograms(trace)
    record["positions"] = intervention_position_shares(trace)
    if method == "oracle" and router == "always":
        record["predicted_speculative"] = predicted_acceptance(trace)
        if trace["request_id"].nunique() >= 2:
            curves = offline_router_curves(trace, seed=seed)
            record["router_offline"] = curves.to_dict(orient="list")
    return record


def _method_figures(record: dict, trace: pd.DataFrame, metadata: dict, params: dict, n_boot: int, seed: int) -> None:
    """What only some methods have: speculative acceptance, both speculative frequencies and the
    rejection counts (sets the job's k); proxy tuning under both definitions."""
    job = record["job"]
    if job["method"] == "speculative":
        k = job.get("k") or metadata.get("k") or params.get("k")
        if k is None:
            raise KeyError(f"speculative job {job['variant']}/{job['benchmark']}: no 'k' in trace metadata")
        job["k"] = int(k)
        record["speculative"], frequencies = speculative_record(trace, int(k), n_boot, seed)
        record["stats"].update(frequencies)
        record["sampling"] = rejection_counts(trace, int(k))
    if job["method"] == "proxy":  # fsgen's definition (tuned small) and the authors' (base small)
        record["stats"].update(proxy_frequencies(trace, n_boot, seed))


def _builtin(value):
    """JSON `default` for the numpy scalars and arrays a record may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value)}")


def write_stats(record: dict, path) -> None:
    """stats.json, atomically: strict JSON (NaN and ±inf as null), indented, except the per-request
    columns (`requests`), one line each (the demo's 150 requests: 10 kB instead of 17 kB)."""
    data = json.loads(json.dumps(record, default=_builtin), parse_constant=lambda _: None)
    columns = data.pop("requests", None)
    text = json.dumps(data, indent=1, ensure_ascii=False)
    if columns is not None:
        lines = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, separators=(',', ':'))}" for k, v in columns.items())
        text = f'{text[:-2]},\n "requests": {{\n{lines}\n }}\n}}'
    atomic.write_text(path, text + "\n")
