"""Rule critical: which interventions matter, from the oracle jobs' counterfactual outcomes.

input:  counterfactual (list: each oracle job's counterfactual.parquet, rule counterfactual_score;
        may be empty), trace (list, the same jobs' trace.parquet: the router curves).
output: critical, critical_bins, critical_routers (`fsgen.analysis.critical.critical_tables`).
params: jobs (list, the identities of those jobs in the same order: benchmark, variant, large,
        small, ...), why_none (what the tables say when there is no job, e.g. the stage is off),
        n_boot (default 1000), seed (default 0).
log:    log[0].
"""

from fsgen.analysis import outputs
from fsgen.analysis.critical import critical_tables
from fsgen.analysis.tables import write_table
from fsgen.harness.counterfactual import read_frame
from fsgen.pipeline.rulescript import rule_script
from fsgen.trace import read_trace


def as_list(value):
    return [value] if isinstance(value, str) else list(value or [])


snakemake, log = rule_script("critical", globals())

named = dict(snakemake.output.items())
outputs.check_names(named, outputs.tables("critical"), "critical")
files, traces = (as_list(snakemake.input.get(k)) for k in ("counterfactual", "trace"))
jobs = list(snakemake.params.get("jobs") or [])
if not len(files) == len(traces) == len(jobs):
    raise ValueError(f"critical: {len(files)} counterfactual files, {len(traces)} traces, {len(jobs)} jobs differ")
items = []
for path, trace_path, job in zip(files, traces, jobs):
    frame, meta = read_frame(path)
    items.append({"job": job, "frame": frame, "meta": meta, "trace": read_trace(trace_path)[0]})
    log.info("%s: %d outcomes (%s)", path, len(frame), meta.get("status"))
tables = critical_tables(items, n_boot=int(snakemake.params.get("n_boot") or 1000),
                         seed=int(snakemake.params.get("seed") or 0),
                         why_none=snakemake.params.get("why_none") or "no counterfactual job")
for name, path in named.items():
    write_table(tables[name], path)
    log.info("%s: %d rows -> %s", name, len(tables[name]), path)
