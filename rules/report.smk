# The report: Snakemake's own HTML report (snakemake --report) over every output flagged with
# report(..., category=...) in rules/analyze.smk, built as the last job of a run. The rule runs
# `snakemake --report` in a subprocess on the stage targets (not on itself), with this run's
# config; by hand: `snakemake --report results/report.html`.


localrules:
    report,


rule report:
    input:
        ANALYSIS_TARGETS,
        job_files("stats.json"),
        viewer_pages(),
    output:
        REPORT_HTML,
    params:
        config=effective_config(),
        snakefile=workflow.main_snakefile,
        targets=["analyses_all", "stats_all", "viewer_all"],
    log:
        LOGS / "report.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/report.py"
