"""Rule summary: results/summary.md, a plain-text digest (headline numbers, fitted laws, paper comparison).

input:  the tables of `fsgen.analysis.outputs.summary_inputs()` by name: jobs, speculative, auroc,
        router_offline_summary (rule aggregate), fits (scaling_law.csv); paper_comparison
        (optional, when a reference is configured). Unnamed inputs (code) are ignored.
output: summary (results/summary.md). Every section is present; one without data says why.
params: none.
log:    log[0].
"""

from fsgen.analysis.summary import write_summary
from fsgen.analysis.tables import rule_inputs
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("summary", globals())

tables, _ = rule_inputs(snakemake.input)
write_summary(tables, tables.get("fits"), snakemake.output.summary)
log.info("wrote %s", snakemake.output.summary)
