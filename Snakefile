# fsgen: fast (System 1) / slow (System 2) collaborative decoding, the FS-GEN study as a workflow.
#   snakemake --cores 2                                   # the embedded demo, end to end
#   snakemake --profile workflow/profiles/slurm --configfile config/paper.yaml   # the paper grid
# Stage targets (fetch, models_all, preflight, decode_all, score_all, stats_all, counterfactual_all,
# tables_all, analyses_all) are listed in docs/workflow.md.
from snakemake.utils import min_version

min_version("9.0")


DEFAULT_CONFIG = "config/config.yaml"


# --configfile replaces the demo config instead of being merged into it (Snakemake merges by
# default, which would add the demo models to the paper grid).
if not workflow.overwrite_configfiles:

    configfile: DEFAULT_CONFIG


# The report's landing page: the run's headline numbers (results/findings.rst, rule summary) with
# links to the figures, included by this description (Snakemake renders it with Jinja and docutils).
report: "workflow/report/workflow.rst"


# Schema validation (workflow/schemas/config.schema.yaml), duplicate keys, semantic checks.
include: "rules/common.smk"
include: "rules/models.smk"
include: "rules/decode.smk"
include: "rules/score.smk"
include: "rules/counterfactual.smk"
include: "rules/analyze.smk"
include: "rules/viewer.smk"
include: "rules/report.smk"


rule all:
    input:
        job_files("stats.json"),
        counterfactual_targets(),
        ANALYSIS_TARGETS,
        viewer_pages(),
        report_targets(),
    default_target: True
