# Models and everything decode jobs need before they start: the demo data and family (trained
# here), the Hugging Face cache (fetch, on a machine with internet), derived task YAMLs for local
# data, and the preflight checks.


localrules:
    demo_data,
    fetch,
    task_overrides,
    preflight,
    models_all,


rule demo_data:
    output:
        expand(str(DEMO_DATA), split=["train", "test", "tuned_train"]),
    params:
        demo=config["demo"],
    log:
        LOGS / "demo_data.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/demo_data.py"


rule demo_tokenizer:
    input:
        train=str(DEMO_DATA).format(split="train"),
    output:
        DEMO_TOKENIZER,
    params:
        demo=config["demo"],
    log:
        LOGS / "demo_tokenizer.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/demo_tokenizer.py"


rule train_model:
    input:
        train=str(DEMO_DATA).format(split="train"),
        tuned_train=str(DEMO_DATA).format(split="tuned_train"),
        tokenizer=DEMO_TOKENIZER,
        base=tuned_base_sidecar,
    output:
        MODEL_SIDECAR,
    params:
        spec=trained_spec,
    threads: RES["train_threads"]
    priority: train_priority
    resources:
        mem_mb=4000,
        runtime=120,
    log:
        LOGS / "train" / "{trained}.log",
    benchmark:
        BENCH / "train" / "{trained}.tsv"
    conda:
        CONDA_ENV
    script:
        "../scripts/demo_train.py"


rule models_all:
    input:
        model_inputs(config["models"]),


rule fetch:
    output:
        FETCH_MANIFEST,
    params:
        models={n: config["models"][n]["path"] for n in pj.hub_models(config)},
        benchmarks={b: harness_benchmark(b) for b in config["benchmarks"]},
        tasks_dir=str(TASKS_DIR),
        cache_dir=output_folder,
    log:
        LOGS / "fetch.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/fetch.py"


rule task_overrides:
    input:
        task_override_inputs,
    output:
        TASK_OVERRIDES,
    params:
        benchmarks={b: harness_benchmark(b) for b in config["benchmarks"]},
        tasks_dir=str(TASKS_DIR),
    log:
        LOGS / "task_overrides.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/task_overrides.py"


rule preflight:
    input:
        models=all_model_inputs,
        overrides=TASK_OVERRIDES,
        fetched=ancient(FETCH_MANIFEST),
    output:
        PREFLIGHT,
    params:
        config=effective_config(),  # the whole checked config: preflight sees every model, router, task
        include_path=overrides_folder,
    log:
        LOGS / "preflight.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/preflight.py"
