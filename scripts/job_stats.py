"""Rule job_stats: one job's trace + lm-eval metrics -> stats.json (fsgen.analysis.job.analyze_job).

input:  trace (trace.parquet); metrics (metrics.json of this job, optional; its score job's
        scored_samples.jsonl beside it gives each request's correctness);
        generations (generations.jsonl, optional: every request, its task and document);
        wall (the decode job's Snakemake benchmark TSV, optional: wall time);
        small_metrics, large_metrics (metrics.json of the small-alone / large-alone runs on the
        same benchmark; pair jobs only, optional).
output: stats (stats.json).
params: job (dict, fsgen.pipeline.jobs.job_identity: benchmark, variant, method, router, large, small,
        large_params, small_params, k);
        metric (lm-eval metric key for this benchmark, e.g. "exact_match,flexible-extract";
        optional, default: first of fsgen.analysis.stats.DEFAULT_METRIC_PREFERENCE present);
        n_boot (bootstrap replicates, default 1000); seed (default 0).
log:    log[0].
"""

import os

from fsgen.analysis.job import analyze_job, write_stats
from fsgen.analysis.requests import request_outcomes, wall_seconds
from fsgen.analysis.stats import read_metrics
from fsgen.trace import read_trace
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("job_stats", globals())


def optional_metrics(name):
    path = snakemake.input.get(name)
    if not path:
        return None
    if not os.path.exists(path):
        log.warning("%s: %s does not exist; accuracy will be NaN", name, path)
        return None
    return read_metrics(path)


job = dict(snakemake.params.job)
metric = snakemake.params.get("metric") or job.pop("metric", None)
trace, metadata = read_trace(snakemake.input.trace)
log.info("job %s: %d trace rows, metric %s", job, len(trace), metric)
metrics_path = snakemake.input.get("metrics")
scored = os.path.join(os.path.dirname(metrics_path), "scored_samples.jsonl") if metrics_path else None
outcomes = request_outcomes(snakemake.input.get("generations"), scored, metric)
log.info("per-request correctness: %s", outcomes[1])
record = analyze_job(
    trace, job, metadata,
    metrics=optional_metrics("metrics"),
    small_metrics=optional_metrics("small_metrics"),
    large_metrics=optional_metrics("large_metrics"),
    metric_name=metric,
    n_boot=int(snakemake.params.get("n_boot") or 1000),
    seed=int(snakemake.params.get("seed") or 0),
    outcomes=outcomes,
    wall_s=wall_seconds(snakemake.input.get("wall")),
)
write_stats(record, snakemake.output.stats)
log.info("wrote %s: frequency %.4f", snakemake.output.stats, record["stats"]["freq_pooled"])
