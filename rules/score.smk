# Scoring (CPU): lm-eval replays the recorded generations (the fsgen-replay model) and computes
# the task's metrics. `run:` executes scripts/score.py in Snakemake's process (fsgen.pipeline.rulescript):
# a score is 1-3 s of work after 5 s of imports. No `conda:` (Snakemake's own environment has fsgen).
# A local rule: on a cluster it runs in the controlling Snakemake process too, never as one of
# hundreds of one-CPU SLURM jobs; MBPP's model-written code so runs (in fsgen.sandbox) on the
# machine that runs Snakemake (docs/slurm.md, "Scoring and statistics").


localrules:
    score,
    score_all,
    stats_all,


rule score:
    input:
        samples=JOB_DIR / "samples.jsonl",
        overrides=TASK_OVERRIDES,  # per benchmark: its task or data changed -> its jobs rerun
        code=[*SCORE_CODE, script_file("score")],
    output:
        metrics=JOB_DIR / "metrics.json",
    params:
        benchmark=params_benchmark,
        include_path=overrides_folder,
    wildcard_constraints:
        job=job_constraint(),
    resources:
        mem_mb=score_mem_mb,
        runtime=score_runtime,
    log:
        LOGS / "score" / "{benchmark}" / "{job}.log",
    run:
        run_in_process("score", input, output, params, wildcards, threads, resources, log, rule)


rule score_all:
    input:
        job_files("metrics.json"),
