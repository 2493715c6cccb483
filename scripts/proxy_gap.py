"""Rule proxy_gap: the share of the gap to the large model tuned directly that proxy tuning closes.

input:  proxy, large, tuned_samples (lists in the same order: each proxy job's metrics.json, its
        large model's alone, the large model's tuned variant's alone; scored_samples.jsonl beside
        each holds the per-document values the paired bootstrap resamples). May be empty.
output: proxy_gap (`fsgen.analysis.proxy_gap.proxy_gap_table`).
params: jobs (list, same order: {"job": the proxy job's identity, "tuned": the tuned variant's
        name}), n_boot (default 2000), seed (default 0).
log:    log[0].
"""

from pathlib import Path

from fsgen.analysis import outputs
from fsgen.analysis.proxy_gap import proxy_gap_table
from fsgen.analysis.tables import write_table
from fsgen.pipeline.rulescript import rule_script


def samples(metrics_paths):
    paths = [metrics_paths] if isinstance(metrics_paths, str) else list(metrics_paths or [])
    return [str(Path(p).with_name("scored_samples.jsonl")) for p in paths]


snakemake, log = rule_script("proxy_gap", globals())

named = dict(snakemake.output.items())
outputs.check_names(named, outputs.tables("proxy_gap"), "proxy_gap")
runs = {key: samples(snakemake.input.get(key)) for key in ("proxy", "large", "tuned_samples")}
jobs = list(snakemake.params.get("jobs") or [])
if not all(len(paths) == len(jobs) for paths in runs.values()):
    raise ValueError(f"proxy_gap: {len(jobs)} jobs but {[len(p) for p in runs.values()]} inputs")
items = [{**entry, **{key: runs[key][i] for key in runs}} for i, entry in enumerate(jobs)]
table = proxy_gap_table(items, n_boot=int(snakemake.params.get("n_boot") or 2000),
                        seed=int(snakemake.params.get("seed") or 0))
write_table(table, named["proxy_gap"])
log.info("proxy_gap: %d rows from %d proxy jobs -> %s", len(table), len(items), named["proxy_gap"])
