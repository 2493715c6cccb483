"""Rule summary: results/summary.md, a plain-text digest (headline numbers, fitted laws, paper comparison).

input:  jobs, speculative, auroc, router_offline_summary (CSVs of rule aggregate), fits
        (scaling_law.csv); paper_comparison (optional, when a reference is configured).
output: summary (results/summary.md).
params: none.
log:    log[0].
"""

import logging

import pandas as pd

from fsgen.analysis.summary import write_summary
from fsgen.analysis.tables import read_tables
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("summary")

inputs = dict(snakemake.input.items())
tables = read_tables({k: v for k, v in inputs.items() if k != "fits"})
fits = pd.read_csv(inputs["fits"]) if "fits" in inputs else None
write_summary(tables, fits, snakemake.output.summary)
log.info("wrote %s", snakemake.output.summary)
