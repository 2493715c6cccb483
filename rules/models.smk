# Models and everything decode jobs need before they start: the demo data and family (trained
# here), the Hugging Face cache (fetch, on a machine with internet), derived task YAMLs for local
# data, and the preflight checks.


localrules:
    demo_data,
    fetch,
    task_overrides,
    preflight_benchmark,
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
        benchmarks=fetch_benchmarks(),
        tasks_dir=str(TASKS_DIR),
        cache_dir=output_folder,
    log:
        LOGS / "fetch.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/fetch.py"


# The setup rules below run before the decode jobs and must not rerun for changes that do not
# change what they write: a setup job that reruns hides, for that invocation, the params changes
# of every decode job downstream of it (Snakemake does not re-check jobs below a rerunning job
# whose connecting input is ancient). So they are per benchmark, their params hold only what
# determines their output, and preflight reads the rest of the config without tracking it.
rule task_overrides:
    input:
        task_override_inputs,
    output:
        TASK_OVERRIDES,
    params:
        benchmark=overrides_benchmark,
        tasks_dir=str(TASKS_DIR),
    log:
        LOGS / "task_overrides" / "{benchmark}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/task_overrides.py"


rule preflight_benchmark:
    input:
        overrides=TASK_OVERRIDES,
    output:
        PREFLIGHT,
    params:
        include_path=overrides_folder,
    log:
        LOGS / "preflight" / "{benchmark}.log",
    conda:
        CONDA_ENV
    script:
        "../scripts/preflight.py"


rule preflight:  # the target: every benchmark's preflight
    input:
        expand(str(PREFLIGHT), benchmark=config["benchmarks"]),
