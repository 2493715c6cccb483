"""Rule frontier: accuracy–cost frontiers per pair and the System 2 share that recovers 90% of the gap.

input:  stats (every stats.json, pair and single jobs: their `requests` blocks, per request its
        costs, document and correctness, and `costs.wall_s`).
output: frontier_points, frontier_bands, gap_recovery (`fsgen.analysis.frontier.frontier_outputs`:
        `fsgen.analysis.cost.frontier_tables` per pair and cost model s2_share, s2_calls, flops,
        wall_s, documents resampled jointly; a status on every row).
        With no pair job (or no per-request block), each table is one row whose `status` says so.
params: n_boot (default 1000), seed (default 0), fraction (of the small→large gap, default 0.9).
log:    log[0].
"""

from fsgen.analysis import outputs
from fsgen.analysis.frontier import frontier_outputs
from fsgen.analysis.requests import request_frame
from fsgen.analysis.tables import load_records, write_table
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("frontier", globals())

named = dict(snakemake.output.items())
outputs.check_names(named, outputs.tables("frontier"), "frontier")
stats = snakemake.input.stats
requests = request_frame(load_records([stats] if isinstance(stats, str) else list(stats)))
log.info("%d per-request rows", len(requests))
tables = frontier_outputs(requests, n_boot=int(snakemake.params.get("n_boot") or 1000),
                          seed=int(snakemake.params.get("seed") or 0),
                          fraction=float(snakemake.params.get("fraction") or 0.9))
for name, path in named.items():
    write_table(tables[name], path)
for row in tables["gap_recovery"].itertuples():
    log.info("%s %s/%s %s: %.3g [%.3g, %.3g] (%s)", row.benchmark, row.large, row.small, row.cost_model, row.cost,
             row.low, row.high, row.status)
