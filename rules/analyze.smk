# Analyses (CPU, local): per-job statistics -> aggregate tables -> scaling law, frontiers, critical
# interventions -> figures, summary (and the report's landing text, findings.rst).
# Inputs include the fsgen/analysis modules, so editing analysis code reruns these rules only.
# Output names, paths, report categories and captions: the registry fsgen.analysis.outputs
# (docs/analysis_rules.md; captions in workflow/report/*.rst).


localrules:
    reference,
    job_stats,
    stats_all,
    aggregate,
    scaling_law,
    frontier,
    critical,
    figures,
    summary,
    tables_all,
    analyses_all,


rule job_stats:
    input:
        unpack(stats_inputs),
        generations=JOB_DIR / "generations.jsonl",  # every request, its document
        wall=BENCH / "decode" / "{benchmark}" / "{job}.tsv",  # the decode job's benchmark file: wall time
        code=[*ANALYSIS_CODE, script_file("job_stats")],
    output:
        stats=JOB_DIR / "stats.json",
    params:
        job=job_identity,
    wildcard_constraints:
        job=job_constraint(),
    log:
        LOGS / "stats" / "{benchmark}" / "{job}.log",
    run:  # in Snakemake's process, like score (rules/score.smk)
        run_in_process("job_stats", input, output, params, wildcards, threads, resources, log, rule)


rule stats_all:
    input:
        job_files("stats.json"),


rule reference:
    input:
        config["reference"] or [],
    output:
        REFERENCE,
    log:
        LOGS / "reference.log",
    run:  # the published rows under our model names (the -Chat pairs on MT-Bench): fsgen.pipeline.reference
        from fsgen.pipeline.reference import write_aligned_reference

        renamed = write_aligned_reference(config, input[0], output[0])
        Path(log[0]).write_text(f"{input[0]} -> {output[0]}: {renamed} row(s) renamed to this config's models\n")


rule aggregate:
    input:
        unpack(reference_input),
        stats=job_files("stats.json"),
        code=ANALYSIS_CODE,
    output:
        **table_outputs("aggregate"),
    log:
        LOGS / "aggregate.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/aggregate.py"


rule scaling_law:
    input:
        unpack(reference_input),
        **table_files(["jobs"]),
        stats=job_files("stats.json"),  # per-request counts: the request bootstrap
        code=ANALYSIS_CODE,
    output:
        **table_outputs("scaling_law"),
    log:
        LOGS / "scaling_law.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/scaling_law.py"


rule frontier:
    input:
        stats=job_files("stats.json"),  # per-request costs and outcomes
        code=ANALYSIS_CODE,
    output:
        **table_outputs("frontier"),
    log:
        LOGS / "frontier.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/frontier.py"


rule critical:
    input:
        unpack(critical_inputs),
        code=ANALYSIS_CODE,
    output:
        **table_outputs("critical"),
    params:
        **critical_jobs(),
    log:
        LOGS / "critical.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/critical.py"


rule proxy_gap:
    input:
        unpack(proxy_gap_inputs),
        code=ANALYSIS_CODE,
    output:
        **table_outputs("proxy_gap"),
    params:
        jobs=proxy_gap_jobs(),
    log:
        LOGS / "proxy_gap.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/proxy_gap.py"


rule figures:
    input:
        ANALYSIS_CODE,  # positional: the script reads every named input as a table
        **table_files(ao.figure_inputs()),
    output:
        **figure_outputs(),
    log:
        LOGS / "figures.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/figures.py"


rule summary:
    input:
        ANALYSIS_CODE,  # positional: the script reads every named input as a table
        **table_files(ao.summary_inputs(REF)),
    output:
        **summary_outputs(),
    log:
        LOGS / "summary.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/summary.py"


rule tables_all:
    input:
        ANALYSIS_TABLES,


rule analyses_all:
    input:
        ANALYSIS_TARGETS,
