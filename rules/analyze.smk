# Analyses (CPU, local): per-job statistics -> aggregate tables -> scaling law, figures, summary.
# Inputs include the fsgen/analysis modules, so editing analysis code reruns these rules only.
# Output names, paths, report categories and captions: the registry fsgen.analysis.outputs
# (docs/analysis_rules.md; captions in workflow/report/*.rst).


localrules:
    reference,
    job_stats,
    stats_all,
    aggregate,
    scaling_law,
    figures,
    summary,
    tables_all,
    analyses_all,


rule job_stats:
    input:
        unpack(stats_inputs),
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
        **aggregate_outputs(),
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
        code=ANALYSIS_CODE,
    output:
        **scaling_outputs(),
    log:
        LOGS / "scaling_law.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/scaling_law.py"


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
        **summary_output(),
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
