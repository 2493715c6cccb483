"""Rule summary: results/summary.md (a plain-text digest) and results/findings.rst (the report's landing text).

input:  the tables of `fsgen.analysis.outputs.summary_inputs()` by name: jobs, speculative, auroc,
        router_offline_summary, router_online, sampling (rule aggregate), fits, scaling_forms, scaling_verdicts
        (rule scaling_law), gap_recovery (rule frontier), critical, critical_routers (rule critical);
        paper_comparison (optional, when a reference is configured). Unnamed inputs (code) are ignored.
output: summary (results/summary.md: every section present; one without data says why);
        findings (results/findings.rst: the headline numbers with links to the figures;
        workflow/report/workflow.rst, the report's description, includes it).
params: none.
log:    log[0].
"""

from fsgen.analysis import outputs
from fsgen.analysis.summary import write_summary
from fsgen.analysis.tables import rule_inputs
from fsgen.pipeline.rulescript import rule_script

snakemake, log = rule_script("summary", globals())

outputs.check_names(dict(snakemake.output.items()), outputs.SUMMARIES, "summary")
tables, _ = rule_inputs(snakemake.input)
write_summary(tables, tables.get("fits"), snakemake.output.summary, snakemake.output.get("findings"))
log.info("wrote %s and %s", snakemake.output.summary, snakemake.output.get("findings"))
