"""Rule summary: results/summary.md, a plain-text digest (headline numbers, fitted laws, paper comparison).

input:  the tables of `fsgen.analysis.outputs.summary_inputs()` by name: jobs, speculative, auroc,
        router_offline_summary (rule aggregate), fits (scaling_law.csv); paper_comparison
        (optional, when a reference is configured). Unnamed inputs (code) are ignored.
output: summary (results/summary.md). Every section is present; one without data says why.
params: none.
log:    log[0].
"""

import logging

from fsgen.analysis import outputs
from fsgen.analysis.summary import write_summary
from fsgen.analysis.tables import read_tables
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
log = logging.getLogger("summary")

tables = read_tables({k: v for k, v in snakemake.input.items() if k in outputs.TABLES})
write_summary(tables, tables.get("fits"), snakemake.output.summary)
log.info("wrote %s", snakemake.output.summary)
