# The report: after a successful run, `snakemake --report results/report.html` with the same
# config files (outputs flagged with report(..., category=...) in rules/analyze.smk). A run with
# nothing to do does not rebuild it; `snakemake --report results/report.html` does by hand.


onsuccess:
    if config["report"]:
        build_report(REPORT_HTML)
