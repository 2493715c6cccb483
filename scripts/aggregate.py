"""Rule aggregate: every job's stats.json -> the aggregate tables (results/tables/*.csv).

input:  stats (list of stats.json); reference (optional: CSV of published frequencies shaped like
        /work/shared/reference/fsgen_paper_collaboration_frequency.csv, from config `reference`).
output: any of the aggregate tables of the registry, `fsgen.analysis.outputs.tables("aggregate")`,
        each a CSV path (only the named ones are written; paper_comparison needs input.reference).
        Every table has a `status` column saying what could not be computed.
params: benchmark_map (optional dict: our benchmark name -> the reference's, e.g. {"gsm8k_cot": "gsm8k"}).
log:    log[0].
"""

import logging

import pandas as pd

from fsgen.analysis import outputs, write_csv
from fsgen.analysis.tables import build_tables, load_records
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("aggregate")

reference_path = snakemake.input.get("reference")
reference = pd.read_csv(reference_path) if reference_path else None
stats = snakemake.input.stats
stats = [stats] if isinstance(stats, str) else list(stats)
outputs_named = dict(snakemake.output.items())
outputs.check_names(outputs_named, outputs.tables("aggregate", reference=reference is not None), "aggregate",
                    "" if reference is not None else " (paper_comparison needs input.reference)")
tables = build_tables(load_records(stats), reference, snakemake.params.get("benchmark_map") or {})
for name, path in outputs_named.items():
    write_csv(tables[name], path)
    not_ok = int((tables[name]["status"] != "ok").sum())
    log.info("%s: %d rows (%d with a status other than ok) -> %s", name, len(tables[name]), not_ok, path)
