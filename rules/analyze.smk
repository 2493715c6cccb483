# Analyses (CPU, local): per-job statistics -> aggregate tables -> scaling law, figures, summary.
# Inputs include the fsgen/analysis modules, so editing analysis code reruns these rules only.


ANALYSIS_TARGETS = []  # tables, figures, summary (filled below)


localrules:
    job_stats,
    stats_all,


rule job_stats:
    input:
        unpack(stats_inputs),
        code=ANALYSIS_CODE,
    output:
        stats=JOB_DIR / "stats.json",
    params:
        job=job_identity,
    wildcard_constraints:
        job=job_constraint(),
    log:
        LOGS / "stats" / "{benchmark}" / "{job}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/job_stats.py"


rule stats_all:
    input:
        job_files("stats.json"),
