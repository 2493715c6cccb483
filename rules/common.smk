# Shared definitions: config checks, path patterns, wildcard constraints, and the named input,
# params and resources functions the stage files use (they contain no lambdas). Functions only;
# the config logic itself lives in the fsgen.pipeline package (pure, unit-tested).
import json
import os
import re
from pathlib import Path

from snakemake.script import Snakemake as ScriptJob

from fsgen.fingerprint import DECODE_CODE as DECODE_MODULES, SCORE_CODE as SCORE_MODULES, code_files
from fsgen.harness.tasks import TASKS_DIR
from fsgen.pipeline import jobs as pj, resources as pr
from fsgen.pipeline.checks import load_and_check
from fsgen.pipeline.config import ConfigError
from fsgen.pipeline.rulescript import run_script

SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
# The config files in use: --configfile ones replace config/config.yaml (see Snakefile).
CONFIG_FILES = [str(p) for p in (workflow.overwrite_configfiles or [DEFAULT_CONFIG])]

try:
    load_and_check(config, SCHEMA, CONFIG_FILES, task_include_paths=[TASKS_DIR])
except ConfigError as err:
    raise WorkflowError(f"invalid config ({', '.join(CONFIG_FILES)}): {err}") from None

# Offline by default: every job reads the cache `snakemake fetch` filled (scripts/fetch.py turns
# this off for itself). Set here so local jobs and cluster jobs (which re-read this file) agree.
os.environ.update(HF_HOME=os.path.abspath(config["cache_dir"]), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")

VARIANTS = pj.expand_variants(config)  # variant name -> decode settings
PAIR_JOBS = pj.decode_jobs(config)
SINGLE_JOBS = pj.single_jobs(config)
TRAINED = pj.trained_models(config)


def alternation(names):
    """Wildcard constraint matching exactly these names."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True)) or "(?!)"


wildcard_constraints:
    benchmark=alternation(config["benchmarks"]),
    variant=alternation(VARIANTS),
    large=alternation(config["models"]),
    small=alternation(config["models"]),
    model=alternation(config["models"]),
    trained=alternation(TRAINED),


# ------------------------------------------------------------------------------ path patterns
# The results layout lives in fsgen.pipeline.paths (fsgen status reads the same places).
from fsgen.pipeline.paths import (
    BENCH, FIGURES, JOB_DIR, LOGS, PAIR_DIR, PREFLIGHT, REFERENCE, REPORT_HTML, RESULTS, RESUME_DIR, SINGLE_DIR,
    TABLES, TASK_OVERRIDES, parse_job as job_of_folder,
)

CONDA_ENV = "../workflow/envs/fsgen.yaml"  # relative to rules/
DEMO_DATA = RESULTS / "demo" / "data" / "{split}.jsonl"
DEMO_TOKENIZER = RESULTS / "demo" / "tokenizer" / "tokenizer.json"
MODEL_SIDECAR = RESULTS / "models" / "{trained}" / "fsgen_model.json"
FETCH_MANIFEST = Path(config["cache_dir"]) / "fsgen_fetch.json"

# Library modules each stage runs: Snakemake does not track imports, so they are inputs (an edit
# reruns that stage and what follows, and nothing before it). The lists live in fsgen.fingerprint.
FSGEN = Path(workflow.basedir) / "fsgen"  # this workflow's copy of the package (pip install -e .)
DECODE_CODE = [str(p) for p in code_files(DECODE_MODULES, FSGEN)]
SCORE_CODE = [str(p) for p in code_files(SCORE_MODULES, FSGEN)]
ANALYSIS_CODE = sorted(str(p) for p in (FSGEN / "analysis").glob("*.py"))
SCRIPTS = Path(workflow.basedir) / "scripts"


def script_file(name):
    """scripts/<name>.py: an input of the `run:` rules below, whose code Snakemake does not track."""
    return str(SCRIPTS / f"{name}.py")


def run_in_process(name, input, output, params, wildcards, threads, resources, log, rule):
    """Run scripts/<name>.py inside this Snakemake process with the `snakemake` object a `script:`
    job gets (fsgen.pipeline.rulescript): the light per-job rules skip 4-6 s of imports per job."""
    job = ScriptJob(input, output, params, wildcards, threads, resources, log, config, rule, None, str(SCRIPTS))
    run_script(script_file(name), job)


def job_dirs():
    """Every decode job folder (pairs, then singles), as concrete paths."""
    return [str(PAIR_DIR).format(**j) for j in PAIR_JOBS] + [str(SINGLE_DIR).format(**j) for j in SINGLE_JOBS]


def job_files(name):
    return [str(Path(d) / name) for d in job_dirs()]


# -------------------------------------------------------------------------- input functions
def model_inputs(names):
    """Sidecars of the workflow-trained models among names (hub models come through fetch)."""
    return [str(MODEL_SIDECAR).format(trained=n) for n in names if n in TRAINED]


def pair_job(wildcards):
    return {"benchmark": wildcards.benchmark, "variant": wildcards.variant, "large": wildcards.large,
            "small": wildcards.small}


def single_job(wildcards):
    return {"benchmark": wildcards.benchmark, "model": wildcards.model}


def pair_decode_inputs(wildcards):
    return model_inputs(pj.job_models(config, pair_job(wildcards)).values())


def single_decode_inputs(wildcards):
    return model_inputs([wildcards.model])


def task_override_inputs(wildcards):
    """The benchmark's local data files (demo data is made by rule demo_data)."""
    data = config["benchmarks"][wildcards.benchmark].get("data") or {}
    return [data[key] for key in ("path", "fewshot_path") if data.get(key)]


def tuned_base_sidecar(wildcards):
    """A tuned variant is fine-tuned from its base model: the base must be trained first."""
    bases = [n for n, m in config["models"].items() if m.get("tuned") == wildcards.trained]
    return model_inputs(bases)


# ------------------------------------------------------------------------- params functions
def overrides_benchmark(wildcards):
    """What a benchmark's derived task depends on: its task and local data (not its limit, seed,
    budget or batch size, which reach the jobs through their own params)."""
    bench = config["benchmarks"][wildcards.benchmark]
    return {"task": bench["task"], "data": bench.get("data")}


def fetch_benchmarks():
    """What fetch downloads per benchmark: its task's dataset unless it has local data."""
    return {b: {"task": e["task"], "data": e.get("data")} for b, e in config["benchmarks"].items()}


def harness_benchmark(name):
    """The benchmark entry in the harness's format (fsgen.harness.tasks.BENCHMARK_DEFAULTS keys);
    chat_template resolved (null: true for a tuned-model benchmark, fsgen.pipeline.jobs.chat_template)."""
    keys = ("task", "data", "limit", "seed", "num_fewshot", "max_new_tokens", "batch_size", "allow_code_execution")
    entry = {k: config["benchmarks"][name][k] for k in keys if k in config["benchmarks"][name]}
    return {**entry, "chat_template": pj.chat_template(config, name)}


def model_entry(name):
    """A model as a decode job gets it; `gpus` only when the config overrides the plan."""
    m = config["models"][name]
    entry = {"name": name, "path": m["path"], "dtype": m["dtype"], "params": m["params"]}
    return {**entry, "gpus": m["gpus"]} if m.get("gpus") is not None else entry


def pair_params_models(wildcards):
    return {role: model_entry(n) for role, n in pj.job_models(config, pair_job(wildcards)).items()}


def single_params_models(wildcards):
    return {role: model_entry(n) for role, n in pj.job_models(config, single_job(wildcards)).items()}


def pair_params_decode(wildcards):
    return pj.decode_settings(config, wildcards.variant)


def single_params_decode(wildcards):
    return pj.decode_settings(config, pj.SINGLE)


def params_benchmark(wildcards):
    return harness_benchmark(wildcards.benchmark)


def params_placement(wildcards):
    """What the job's placement plan needs beyond its models: the longest prompt to plan for."""
    return {"prompt_tokens": pr.prompt_tokens(config, wildcards.benchmark)}


def trained_spec(wildcards):
    """What train_model needs: the name, whether it is a tuned variant and of which base."""
    bases = [n for n, m in config["models"].items() if m.get("tuned") == wildcards.trained]
    return {"name": wildcards.trained, "base": bases[0] if bases else None, "seed": config["demo"]["seed"]}


def train_priority(wildcards):
    """Larger models train first: the largest one's training is the critical path of the demo
    (longest job first; left to itself Snakemake started it last)."""
    by_size = sorted(TRAINED, key=lambda name: (config["models"][name]["params"], name))
    return by_size.index(wildcards.trained)


# ---------------------------------------------------------------------- resources functions
RES = config["resources"]


def job_of(wildcards):
    """The decode job of a decode_pair or decode_single job's wildcards."""
    return single_job(wildcards) if hasattr(wildcards, "model") else pair_job(wildcards)


def decode_gpus(wildcards):
    """Planned from the job's models (fsgen.pipeline.resources.job_gpus); SLURM's --gpus."""
    return pr.job_gpus(config, job_of(wildcards))


def decode_nodes(wildcards):
    """One node: a decode job is one process, its GPUs must be on one machine (SLURM's --nodes)."""
    return 1


def decode_mem_mb(wildcards, attempt):
    return pr.decode_mem_mb(config, job_of(wildcards), attempt)


def decode_runtime(wildcards, attempt):
    """First guess from the models and token budget, grown per retry, capped at max_runtime."""
    return pr.decode_runtime(config, job_of(wildcards), attempt)


def decode_batch_size(wildcards, attempt):
    """Halved on each retry (OOM): read by scripts/decode.py as snakemake.resources.batch_size."""
    return pr.attempt_batch_size(config["benchmarks"][wildcards.benchmark]["batch_size"], attempt)


def score_mem_mb(wildcards, attempt):
    return pr.grown(RES["score_mem_mb"], attempt, RES["growth"])


def score_runtime(wildcards, attempt):
    return pr.capped_runtime(config, pr.grown(RES["score_runtime"], attempt, RES["growth"]))


def job_constraint():
    models = alternation(config["models"])
    return f"(?:(?:{alternation(VARIANTS)})/(?:{models})__(?:{models})|{pj.SINGLE}/(?:{models}))"


def parse_job(wildcards):
    """{benchmark, variant, large, small} of a pair job or {benchmark, model} of a single."""
    return job_of_folder(wildcards.benchmark, wildcards.job)


def stats_inputs(wildcards):
    """A pair's statistics compare with the small-alone and large-alone baselines."""
    job_dir = JOB_DIR.as_posix().format(benchmark=wildcards.benchmark, job=wildcards.job)
    inputs = {"trace": Path(job_dir) / "trace.parquet", "metrics": Path(job_dir) / "metrics.json"}
    job = parse_job(wildcards)
    if "variant" in job:
        for role in ("small", "large"):
            single = str(SINGLE_DIR).format(benchmark=job["benchmark"], model=job[role])
            inputs[f"{role}_metrics"] = Path(single) / "metrics.json"
    return {k: str(v) for k, v in inputs.items()}


def job_identity(wildcards):
    """The job as fsgen.analysis.analyze_job expects it (JOB_KEYS)."""
    return pj.job_identity(config, parse_job(wildcards))


def effective_config():
    """This run's config (config files, --config overrides, defaults) as plain data: the
    report subprocess re-reads exactly it."""
    return json.loads(json.dumps(config))


def report_targets():
    return [str(REPORT_HTML)] if config["report"] else []


def overrides_folder(wildcards, input):
    """include_path of lm-eval: the folder of the task overrides manifest (and YAMLs)."""
    return str(Path(input.overrides).parent)


def output_folder(wildcards, output):
    return str(Path(output[0]).parent)


# --------------------------------------------------------------------------------- analyses
# Names, paths, report categories and captions of every table, figure and the summary: the
# registry fsgen.analysis.outputs (the rule scripts check their names against it).
from fsgen.analysis import outputs as ao

REF = bool(config["reference"])  # the paper comparison exists only with a reference


def caption(name):
    """A caption of an output outside the registry (the viewer pages), relative to rules/."""
    return os.path.join("..", ao.REPORT_DIR, f"{name}.rst")


def registered(entries):
    """{name: path below results/} of registry entries, flagged for the report when they have a category."""
    return {
        n: report(RESULTS / o.path, category=o.category, caption=ao.caption_path(o, "..")) if o.category
        else RESULTS / o.path
        for n, o in entries.items()
    }


def table_outputs(rule):
    """{name: path} of the registry tables `rule` writes (aggregate, scaling_law, frontier, critical)."""
    return registered(ao.tables(rule, reference=REF))


def figure_outputs():
    return registered(ao.FIGURES)


def summary_outputs():
    return registered(ao.SUMMARIES)


def table_files(names):
    """{name: results/tables/<file>.csv} of registry tables (inputs of figures and summary)."""
    return {n: RESULTS / ao.TABLES[n].path for n in names}


def reference_input(wildcards):
    """The published frequencies under this config's model names (rule reference), when configured."""
    return {"reference": str(REFERENCE)} if config["reference"] else {}


def critical_inputs(wildcards):
    """Every oracle job's counterfactual outcomes and trace (in the order of critical_jobs())."""
    return {"counterfactual": counterfactual_targets(),
            "trace": [str(PAIR_DIR / "trace.parquet").format(**j) for j in COUNTERFACTUAL_JOBS]}


PROXY_GAP_JOBS = pj.proxy_gap_jobs(config)  # (proxy job, the large model's tuned variant)


def proxy_gap_inputs(wildcards):
    """metrics.json (scored_samples.jsonl beside it) of each proxy job, its large model alone and
    its reference alone, in the order of PROXY_GAP_JOBS."""
    single = lambda job, model: str(SINGLE_DIR / "metrics.json").format(benchmark=job["benchmark"], model=model)
    return {"proxy": [str(PAIR_DIR / "metrics.json").format(**job) for job, _ in PROXY_GAP_JOBS],
            "large": [single(job, job["large"]) for job, _ in PROXY_GAP_JOBS],
            "tuned_samples": [single(job, tuned) for job, tuned in PROXY_GAP_JOBS]}


def proxy_gap_jobs():
    return [{"job": pj.job_identity(config, job), "tuned": tuned} for job, tuned in PROXY_GAP_JOBS]


def critical_jobs():
    """The identities of the oracle jobs critical_inputs() lists, and why there are none."""
    jobs = [pj.job_identity(config, j) for j in COUNTERFACTUAL_JOBS]
    off = not int(config["counterfactual"]["positions"]) > 0
    why = ("counterfactual stage off (counterfactual.positions: 0)" if off else
           "no oracle job with router always (the counterfactual stage continues its interventions)")
    return {"jobs": jobs, "why_none": why}


ANALYSIS_TABLES = [str(RESULTS / o.path) for o in ao.tables(reference=REF).values()]
ANALYSIS_TARGETS = [str(RESULTS / o.path) for o in ao.all_outputs(reference=REF)]


# ----------------------------------------------------------------------------------- viewer
VIEWER = config["viewer"]
VIEWER_CODE = sorted(str(p) for p in (FSGEN / "viewer").glob("*.py"))
VIEWER_PAGE = PAIR_DIR / "viewer.html"


def viewer_tokenizer(wildcards):
    """The pair's tokenizer: the small model's folder or hub id (preflight checked they agree)."""
    return config["models"][wildcards.small]["path"]


def viewer_pages():
    return [str(VIEWER_PAGE).format(**j) for j in PAIR_JOBS]


# --------------------------------------------------------------------------- counterfactual
# Which interventions matter (rules/counterfactual.smk): oracle jobs' interventions continued with
# System 1's token (GPU), then scored with the task's metric (CPU). Off with counterfactual.positions: 0.
from fsgen.pipeline.paths import COUNTERFACTUAL_CONTINUATIONS, COUNTERFACTUAL_OUTPUT, COUNTERFACTUAL_RESUME_DIR

COUNTERFACTUAL_JOBS = pj.counterfactual_jobs(config)
COUNTERFACTUAL_VARIANTS = pj.counterfactual_variants(config)
# library modules beyond the decode / score rules' code lists (fsgen.fingerprint)
COUNTERFACTUAL_CODE = [str(FSGEN / "harness" / "counterfactual.py")]
COUNTERFACTUAL_SCORE_CODE = [str(FSGEN / "harness" / name) for name in ("counterfactual.py", "counterfactual_score.py")] + [
    str(FSGEN / "analysis" / name) for name in ("stats.py", "cost.py")]  # the primary metric per document


def counterfactual_variant_constraint():
    return alternation(COUNTERFACTUAL_VARIANTS)


def counterfactual_params(wildcards):
    """The config's counterfactual section: {positions, seed}."""
    return dict(config["counterfactual"])


def counterfactual_targets():
    """counterfactual.parquet of every oracle job (none when the stage is off)."""
    return [str(PAIR_DIR / COUNTERFACTUAL_OUTPUT).format(**j) for j in COUNTERFACTUAL_JOBS]
