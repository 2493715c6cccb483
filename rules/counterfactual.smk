# Which interventions matter (#13): for a seeded sample of each oracle job's interventions,
# decoding continues with System 1's token instead of System 2's (GPU, like decode: the job's
# models and resources, resumable), then lm-eval scores each answer with the task's metric
# (CPU, like score). A task without an accuracy metric (MT-Bench) gets empty outputs whose
# metadata say "skipped" and why, without loading a model. counterfactual.positions: 0 = no jobs.


localrules:
    counterfactual_all,


rule counterfactual:
    input:
        models=pair_decode_inputs,
        trace=PAIR_DIR / "trace.parquet",
        generations=PAIR_DIR / "generations.jsonl",
        metrics=PAIR_DIR / "metrics.json",
        code=[*DECODE_CODE, *COUNTERFACTUAL_CODE, script_file("counterfactual")],
    output:
        continuations=PAIR_DIR / COUNTERFACTUAL_CONTINUATIONS,
    params:
        models=pair_params_models,
        decode=pair_params_decode,
        counterfactual=counterfactual_params,
        resume_dir=COUNTERFACTUAL_RESUME_DIR,
    wildcard_constraints:
        variant=counterfactual_variant_constraint(),
    threads: RES["decode_threads"]
    resources:
        gpu=decode_gpus,
        nodes=decode_nodes,
        mem_mb=decode_mem_mb,
        runtime=decode_runtime,
        batch_size=decode_batch_size,
    log:
        LOGS / "counterfactual" / "{benchmark}" / "{variant}" / "{large}__{small}.log",
    benchmark:
        BENCH / "counterfactual" / "{benchmark}" / "{variant}" / "{large}__{small}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/counterfactual.py"


rule counterfactual_score:
    input:
        continuations=PAIR_DIR / COUNTERFACTUAL_CONTINUATIONS,
        samples=PAIR_DIR / "samples.jsonl",
        generations=PAIR_DIR / "generations.jsonl",
        metrics=PAIR_DIR / "metrics.json",
        overrides=TASK_OVERRIDES,  # per benchmark: its task or data changed -> its jobs rerun
        code=[*SCORE_CODE, *COUNTERFACTUAL_SCORE_CODE, script_file("counterfactual_score")],
    output:
        counterfactual=PAIR_DIR / COUNTERFACTUAL_OUTPUT,
    params:
        benchmark=params_benchmark,
        include_path=overrides_folder,
    wildcard_constraints:
        variant=counterfactual_variant_constraint(),
    resources:
        mem_mb=score_mem_mb,
        runtime=score_runtime,
    log:
        LOGS / "counterfactual_score" / "{benchmark}" / "{variant}" / "{large}__{small}.log",
    run:  # in Snakemake's process, like score (rules/score.smk)
        run_in_process("counterfactual_score", input, output, params, wildcards, threads, resources, log, rule)


rule counterfactual_all:
    input:
        counterfactual_targets(),
