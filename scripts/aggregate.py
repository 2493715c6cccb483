"""Rule aggregate: every job's stats.json -> the aggregate tables (results/tables/*.csv).

input:  stats (list of stats.json); reference (optional: CSV of published frequencies shaped like
        /work/shared/reference/fsgen_paper_collaboration_frequency.csv, from config `reference`).
output: any of these names, each a CSV path (only the named ones are written):
        jobs, collaboration_wide, accuracy_wide, auroc, positions, histograms, speculative,
        accepted_lengths, router_offline, router_offline_summary, router_online,
        paper_comparison (needs input.reference).
params: benchmark_map (optional dict: our benchmark name -> the reference's, e.g. {"gsm8k_cot": "gsm8k"}).
log:    log[0].
"""

import logging

import pandas as pd

from fsgen.analysis import write_csv
from fsgen.analysis.tables import build_tables, load_records
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("aggregate")

reference_path = snakemake.input.get("reference")
reference = pd.read_csv(reference_path) if reference_path else None
stats = snakemake.input.stats
stats = [stats] if isinstance(stats, str) else list(stats)
tables = build_tables(load_records(stats), reference, snakemake.params.get("benchmark_map") or {})
outputs = dict(snakemake.output.items())
unknown = sorted(set(outputs) - set(tables))
if unknown:
    raise KeyError(f"aggregate: unknown output name(s) {unknown}; known: {sorted(tables)}"
                   + ("" if reference is not None else " (paper_comparison needs input.reference)"))
for name, path in outputs.items():
    write_csv(tables[name], path)
    log.info("%s: %d rows -> %s", name, len(tables[name]), path)
