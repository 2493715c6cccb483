"""Cluster resources of the jobs: GPUs, host memory and runtime of a decode job from the models it
loads (through the placement planner, fsgen.decoding.placement), growth on retries, the caps.

A decode job's resources, in order of precedence (docs/slurm.md, "Resources of a decode job"):
- GPUs: 0 when every model it loads has `gpus: 0` (a CPU job). Otherwise, when the architecture of
  every model is known (its config.json, in its local folder or in the Hugging Face cache that
  `snakemake fetch` filled), the planner's `job_gpus`: the fewest cards of `resources.gpu_memory_gb`
  on which all its models fit at the benchmark's batch size (a model's `gpus: n` gives it n cards
  of its own). Before `fetch` (no config.json yet, e.g. a dry run in a fresh clone) the fallback
  `fallback_gpus`: the `gpus: n` models n cards each, the others pooled by their weights
  (parameters x dtype bytes x FALLBACK_MEMORY_FACTOR over the usable memory of a card).
- host memory: `resources.decode_mem_mb` when set, else the planner's `host_memory_mb` (the
  libraries + one shard's buffer on GPUs; weights, KV cache and transients on the CPU).
- runtime: `resources.decode_runtime` when set, else the planner's `decode_seconds` (model sizes,
  documents, token budget, prompt length, method) on `resources.gpu_type` through
  `runtime_minutes`; FALLBACK_RUNTIME_MIN for CPU jobs and before `fetch`.
Memory and runtime grow by `resources.growth` per attempt (a retry after an out-of-memory kill or a
timeout asks for more), and no runtime exceeds `resources.max_runtime` (sbatch refuses a limit
over the partition's). The batch size halves per attempt instead, which changes no result (a row
does not depend on its batch).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

from fsgen.decoding import placement as pl
from fsgen.decoding import runtime
from fsgen.decoding.config import DEFAULTS
from fsgen.pipeline.config import ConfigError
from fsgen.pipeline.jobs import SINGLE, decode_settings, job_models
from fsgen.pipeline.mirror import is_hub_id

FALLBACK_MEMORY_FACTOR = 1.25  # weights + room for KV cache and transients, when the architecture is unknown
FALLBACK_RUNTIME_MIN = 240  # first-attempt minutes of a CPU job or of a model without config.json
DEFAULT_DOCUMENTS = 1000  # documents per job assumed for the runtime when the benchmark's limit is null
BYTES_PER_PARAM = {**pl.DTYPE_BYTES, "auto": 2}  # `auto`: the checkpoints' dtype, bfloat16 for current models


def grown(base: float, attempt: int, factor: float) -> int:
    """A resource that grows with the attempt number (retries after OOM / timeout)."""
    return int(math.ceil(base * factor ** (attempt - 1)))


def attempt_batch_size(batch_size: int | None, attempt: int) -> int:
    """Batch size for an attempt (None: the engine's default): halved on each retry."""
    return max(1, int(DEFAULTS.batch_size if batch_size is None else batch_size) >> (attempt - 1))


def capped_runtime(config: dict, minutes: int) -> int:
    """A runtime in minutes, never above `resources.max_runtime`."""
    return int(min(minutes, config["resources"]["max_runtime"]))


# ------------------------------------------------------------------------ architectures
_CONFIG_JSON: dict[tuple[str, str], dict] = {}  # found config.json files (a missing one may appear after fetch)


def _config_json(path: str, hub_cache: str) -> dict | None:
    """config.json of a local model folder, or of a hub id in the Hugging Face cache, or None."""
    if (path, hub_cache) in _CONFIG_JSON:
        return _CONFIG_JSON[path, hub_cache]
    if is_hub_id(path):
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(path, "config.json", cache_dir=hub_cache)
        file = Path(found) if isinstance(found, str) else None
    else:
        file = Path(path).expanduser() / "config.json"
    if file is None or not file.is_file():
        return None
    _CONFIG_JSON[path, hub_cache] = json.loads(file.read_text(encoding="utf-8"))
    return _CONFIG_JSON[path, hub_cache]


def model_spec(config: dict, name: str) -> pl.ModelSpec | None:
    """The planner's view of a model from its config.json (None when there is none yet)."""
    model = config["models"][name]
    found = _config_json(str(model["path"]), str(Path(config["cache_dir"]) / "hub"))
    if found is None:
        return None
    dtype = model.get("dtype") if model.get("dtype") in pl.DTYPE_BYTES else "bfloat16"
    try:
        return pl.ModelSpec.from_hf_config(name, found, dtype=dtype, gpus=model.get("gpus") or None)
    except pl.PlacementError as err:
        raise ConfigError(f"models.{name}.path: {err}") from None


def job_specs(config: dict, job: dict) -> dict[str, pl.ModelSpec] | None:
    """Role -> ModelSpec of every model the job loads; None when one has no config.json yet."""
    specs = {role: model_spec(config, name) for role, name in job_models(config, job).items()}
    return None if any(spec is None for spec in specs.values()) else specs


def job_method(config: dict, job: dict) -> str:
    """The registry method a decode job runs (`single` for a baseline)."""
    return SINGLE if "model" in job else decode_settings(config, job["variant"])["method"]


# ------------------------------------------------------------------------------- planning
def _plan_inputs(config: dict, job: dict) -> dict:
    bench = config["benchmarks"][job["benchmark"]]
    return {"batch_cap": attempt_batch_size(bench.get("batch_size"), 1),
            "prompt_tokens": prompt_tokens(config, job["benchmark"]),
            "max_new_tokens": int(bench.get("max_new_tokens") or DEFAULTS.max_new_tokens)}


def prompt_tokens(config: dict, benchmark: str) -> int:
    """The longest prompt a benchmark's jobs are planned for (`prompt_tokens`, or the planner's default)."""
    return int(config["benchmarks"][benchmark].get("prompt_tokens") or pl.DEFAULT_PROMPT_TOKENS)


@lru_cache(maxsize=None)
def _planned(specs: tuple, system2: str, gpu_memory_gb: float, batch_cap: int, prompt_tokens: int,
             max_new_tokens: int):
    """(GPUs, batch size at those GPUs) of a job's models (role, spec) pairs; cached: many jobs share them."""
    models = dict(specs)
    n = pl.job_gpus(models, gpu_memory_gb=gpu_memory_gb, batch_cap=batch_cap, prompt_tokens=prompt_tokens,
                    max_new_tokens=max_new_tokens, system2=system2)
    plan = pl.plan_placement(models, n_gpus=n, gpu_memory_gb=gpu_memory_gb, batch_cap=batch_cap,
                             prompt_tokens=prompt_tokens, max_new_tokens=max_new_tokens, system2=system2)
    return n, plan.batch_size


def is_cpu_job(config: dict, job: dict) -> bool:
    """Every model of the job has `gpus: 0`."""
    return all(config["models"][n].get("gpus") == 0 for n in job_models(config, job).values())


def planned_gpus_and_batch(config: dict, job: dict) -> tuple[int, int] | None:
    """The planner's (GPUs, batch size) for a GPU job whose architectures are known, else None."""
    specs = None if is_cpu_job(config, job) else job_specs(config, job)
    if specs is None:
        return None
    try:
        return _planned(tuple(specs.items()), pl.system2_role(job_method(config, job)),
                        float(config["resources"]["gpu_memory_gb"]), **_plan_inputs(config, job))
    except pl.PlacementError as err:
        raise ConfigError(f"benchmarks.{job['benchmark']}: job {job_label(job)} cannot be placed: {err}") from None


def fallback_gpus(config: dict, names) -> int:
    """GPUs of models without config.json: each `gpus: n` model n cards of its own, the others
    pooled, ceil(their weights x FALLBACK_MEMORY_FACTOR / usable card memory) (at least 1)."""
    models = [config["models"][n] for n in names]
    own = sum(int(m["gpus"]) for m in models if m.get("gpus") is not None)
    pooled = [m for m in models if m.get("gpus") is None]
    if not pooled:
        return own
    need = sum(m["params"] * BYTES_PER_PARAM[m.get("dtype", "bfloat16")] for m in pooled) * FALLBACK_MEMORY_FACTOR
    return own + max(1, math.ceil(need / pl.usable_gpu_bytes(float(config["resources"]["gpu_memory_gb"]))))


def job_gpus(config: dict, job: dict) -> int:
    """GPUs of a decode job (module docstring)."""
    if is_cpu_job(config, job):
        return 0
    planned = planned_gpus_and_batch(config, job)
    return planned[0] if planned is not None else fallback_gpus(config, job_models(config, job).values())


def job_label(job: dict) -> str:
    return job["model"] if "model" in job else f"{job['variant']}/{job['large']}__{job['small']}"


# ---------------------------------------------------------------------- memory, runtime
def decode_mem_mb(config: dict, job: dict, attempt: int) -> int:
    """Host memory (MiB) of a decode job's attempt (module docstring)."""
    res = config["resources"]
    if res.get("decode_mem_mb"):
        return grown(res["decode_mem_mb"], attempt, res["growth"])
    gpus, specs, inputs = job_gpus(config, job), job_specs(config, job), _plan_inputs(config, job)
    if specs is not None:
        mib = pl.host_memory_mb(specs, n_gpus=gpus, batch_size=inputs["batch_cap"],
                                prompt_tokens=inputs["prompt_tokens"], max_new_tokens=inputs["max_new_tokens"])
    else:  # no config.json yet: the libraries, and a shard's buffer (GPU) or the weights (CPU)
        models = [config["models"][n] for n in job_models(config, job).values()]
        weights = sum(m["params"] * BYTES_PER_PARAM[m.get("dtype", "bfloat16")] for m in models)
        extra = pl.STREAM_BUFFER_GIB * pl.GIB if gpus else weights * FALLBACK_MEMORY_FACTOR
        mib = math.ceil((pl.HOST_BASE_GIB * pl.GIB + extra) / (1 << 20))
    return grown(mib, attempt, res["growth"])


def runtime_method(config: dict, job: dict) -> str:
    """The method as the planner's throughput model knows it: single, oracle (the fast path: System 2
    generates, router always), speculative, or anything else (every model steps at every token)."""
    method = job_method(config, job)
    if method == "oracle" and decode_settings(config, job["variant"]).get("router", "always") != "always":
        return "routed"
    return method


def decode_runtime(config: dict, job: dict, attempt: int) -> int:
    """SLURM time limit (minutes) of a decode job's attempt (module docstring)."""
    res = config["resources"]
    planned = None if res.get("decode_runtime") else planned_gpus_and_batch(config, job)
    if planned is None:
        first = res.get("decode_runtime") or FALLBACK_RUNTIME_MIN
        return capped_runtime(config, grown(first, attempt, res["growth"]))
    specs, inputs = job_specs(config, job), _plan_inputs(config, job)
    bench = config["benchmarks"][job["benchmark"]]
    seconds = runtime.decode_seconds(
        specs, runtime_method(config, job), gpu=runtime.GPU_MODELS[res["gpu_type"]],
        documents=int(bench.get("limit") or DEFAULT_DOCUMENTS), batch_size=planned[1],
        prompt_tokens=inputs["prompt_tokens"], max_new_tokens=inputs["max_new_tokens"],
        system2=pl.system2_role(job_method(config, job)),
        draft_k=int(decode_settings(config, job["variant"]).get("k") or DEFAULTS.k) if "variant" in job else DEFAULTS.k)
    return runtime.runtime_minutes(seconds, attempt, growth=res["growth"], max_minutes=res["max_runtime"])
