# Decoding (GPU jobs on a cluster): one job per pair x method variant x benchmark, and one per single
# model x benchmark for the small-alone / large-alone baselines, shared by every pair.
# The batch size is a resource, not a param: it halves on each retry (OOM) without counting as a
# params change, and a row's result does not depend on it. GPUs, host memory and runtime come from
# the models' sizes through the placement planner (fsgen.pipeline.resources, docs/slurm.md); nodes=1
# keeps a multi-GPU job's cards on one machine.


rule decode_pair:
    input:
        models=pair_decode_inputs,
        preflight=ancient(PREFLIGHT),
        overrides=TASK_OVERRIDES,  # per benchmark: its task or data changed -> its jobs rerun
        code=DECODE_CODE,
    output:
        trace=PAIR_DIR / "trace.parquet",
        samples=PAIR_DIR / "samples.jsonl",
        generations=PAIR_DIR / "generations.jsonl",
    params:
        models=pair_params_models,
        decode=pair_params_decode,
        benchmark=params_benchmark,
        placement=params_placement,
        include_path=overrides_folder,
        resume_dir=RESUME_DIR,
    threads: RES["decode_threads"]
    resources:
        gpu=decode_gpus,
        nodes=decode_nodes,
        mem_mb=decode_mem_mb,
        runtime=decode_runtime,
        batch_size=decode_batch_size,
    log:
        LOGS / "decode" / "{benchmark}" / "{variant}" / "{large}__{small}.log",
    benchmark:
        BENCH / "decode" / "{benchmark}" / "{variant}" / "{large}__{small}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/decode.py"


rule decode_single:
    input:
        models=single_decode_inputs,
        preflight=ancient(PREFLIGHT),
        overrides=TASK_OVERRIDES,  # per benchmark: its task or data changed -> its jobs rerun
        code=DECODE_CODE,
    output:
        trace=SINGLE_DIR / "trace.parquet",
        samples=SINGLE_DIR / "samples.jsonl",
        generations=SINGLE_DIR / "generations.jsonl",
    params:
        models=single_params_models,
        decode=single_params_decode,
        benchmark=params_benchmark,
        placement=params_placement,
        include_path=overrides_folder,
        resume_dir=RESUME_DIR,
    threads: RES["decode_threads"]
    resources:
        gpu=decode_gpus,
        nodes=decode_nodes,
        mem_mb=decode_mem_mb,
        runtime=decode_runtime,
        batch_size=decode_batch_size,
    log:
        LOGS / "decode" / "{benchmark}" / "single" / "{model}.log",
    benchmark:
        BENCH / "decode" / "{benchmark}" / "single" / "{model}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/decode.py"


rule decode_all:
    input:
        job_files("trace.parquet"),
