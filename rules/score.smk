# Scoring (CPU): lm-eval replays the recorded generations (the fsgen-replay model) and computes
# the task's metrics.


localrules:
    score_all,
    stats_all,


rule score:
    input:
        samples=JOB_DIR / "samples.jsonl",
        overrides=ancient(TASK_OVERRIDES),
        code=SCORE_CODE,
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
    conda:
        CONDA_ENV
    script:
        "../scripts/score.py"


rule score_all:
    input:
        job_files("metrics.json"),
