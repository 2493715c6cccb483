"""Everything the Snakefile checks before building the DAG, each error naming the key at fault.

`load_and_check` rejects duplicate keys in the config files, validates against the JSON schema,
fills its defaults, redirects hub ids and datasets to the configured mirrors
(`fsgen.pipeline.mirror`), then runs `validate_config`: names usable as wildcards and folders, methods
from the registry with only the settings they read, routers that parse, pairs ordered by size,
tuned variants where proxy tuning or a chat benchmark needs them, known lm-eval tasks, local data
and reference files that exist.
"""

from __future__ import annotations

from pathlib import Path

from fsgen.decoding.methods import METHODS, method_specific_params, pair_methods
from fsgen.decoding.runtime import GPU_MODELS
from fsgen.pipeline import jobs
from fsgen.pipeline.config import ConfigError, fill_defaults, load_yaml_unique, validate_schema
from fsgen.pipeline.mirror import apply_mirrors
from fsgen.pipeline.task_index import known_task_names

NULL_WORDS = ("null", "none", "~", "")  # `--config reference=null` arrives as the string "null"
NULLABLE_PATHS = ("reference", "model_mirror", "data_mirror")  # top-level keys where those words mean null


def _check_models(models: dict) -> None:
    for name, m in models.items():
        key = f"models.{name}"
        if not jobs.NAME_RE.match(name) or "__" in name or name in jobs.RESERVED_NAMES:
            raise ConfigError(f"{key}: model name must match {jobs.NAME_RE.pattern}, not contain '__', "
                              f"and not be one of {', '.join(jobs.RESERVED_NAMES)}")
        if isinstance(m.get("params"), bool) or not isinstance(m.get("params"), (int, float)) or not m["params"] > 0:
            raise ConfigError(f"{key}.params: must be a positive number of parameters, got {m.get('params')!r}")
        tuned = m.get("tuned")
        if tuned is not None:
            if tuned not in models:
                raise ConfigError(f"{key}.tuned: tuned variant {tuned!r} has no entry under models")
            if tuned == name:
                raise ConfigError(f"{key}.tuned: a model cannot be its own tuned variant")
        if m.get("train") and Path(m["path"]) != Path("results/models") / name:
            raise ConfigError(f"{key}.path: a model trained by the workflow lives at results/models/{name}, got {m['path']!r}")


def _check_methods(methods: dict) -> None:
    takers = method_specific_params()
    for name, spec in methods.items():
        if spec["method"] not in pair_methods():
            raise ConfigError(f"methods.{name}.method: unknown method {spec['method']!r}; expected one of "
                              f"{', '.join(pair_methods())} (single-model baselines are added automatically)")
        method = METHODS[spec["method"]]
        if "router" in spec and "routers" in spec:
            raise ConfigError(f"methods.{name}: give either router (one) or routers (a sweep), not both")
        if not method.routed and ("router" in spec or "routers" in spec):
            raise ConfigError(f"methods.{name}: method {method.name} takes no router (it consults System 2 every round)")
        for param, methods_reading in takers.items():
            if spec.get(param) is not None and method.name not in methods_reading:
                raise ConfigError(f"methods.{name}.{param}: {param} only applies to method "
                                  f"{' and '.join(methods_reading)}, not {method.name}")
        _check_learned_routers(name, spec)


def _check_learned_routers(name: str, spec: dict) -> None:
    """A learned router's file must exist when the DAG is built (cheap), not first on a GPU node;
    preflight checks it again, but a config edit does not rerun preflight."""
    keys = [(f"methods.{name}.routers[{i}]", r) for i, r in enumerate(spec.get("routers") or [])]
    keys += [(f"methods.{name}.router", spec["router"])] if "router" in spec else []
    for key, router in keys:
        parsed = jobs.router_spec(router, key)
        if parsed.kind == "learned" and not Path(parsed.path).is_file():
            raise ConfigError(f"{key}: learned router file {parsed.path!r} does not exist "
                              f"(train one with `fsgen train-router`; relative paths are from the working directory)")


def _check_benchmarks(config: dict, pairs, variants: dict, task_names) -> None:
    models = config["models"]
    proxy = next((v for v, s in variants.items() if METHODS[s["method"]].needs_tuned_small), None)
    for b, bench in config.get("benchmarks", {}).items():
        tuned_bench = bench.get("models", "base") == "tuned"
        for lg, sm in pairs:
            if tuned_bench:
                for name in (lg, sm):
                    if not models[name].get("tuned"):
                        raise ConfigError(f"benchmarks.{b}.models: 'tuned' needs a tuned variant of every paired "
                                          f"model; models.{name}.tuned is not set")
            elif proxy and not models[sm].get("tuned"):
                raise ConfigError(f"methods.{proxy}: proxy tuning needs a tuned variant of the small model; "
                                  f"models.{sm}.tuned is not set (pair {lg}__{sm})")
        if task_names is not None and bench["task"] not in task_names:
            raise ConfigError(f"benchmarks.{b}.task: unknown lm-eval task {bench['task']!r} "
                              f"(not built into lm-eval nor under fsgen/harness/lm_eval_tasks/)")
        data = (bench.get("data") or {}).get("path")
        # a file under results/ is made by the workflow (the demo data); others must exist now
        if data and not Path(data).parts[:1] == ("results",) and not Path(data).exists():
            raise ConfigError(f"benchmarks.{b}.data.path: local data file {data!r} does not exist")


def validate_config(config: dict, task_names: set[str] | None = None) -> None:
    """Checks beyond the JSON schema (run after it, on a config with defaults filled).
    `task_names`: when given, each benchmark's task must be among them."""
    _check_models(config.get("models", {}))
    for section in ("methods", "benchmarks"):
        for name in config.get(section, {}):
            if not jobs.NAME_RE.match(name) or name in jobs.RESERVED_NAMES:
                raise ConfigError(f"{section}.{name}: name must match {jobs.NAME_RE.pattern} and not be one of "
                                  f"{', '.join(jobs.RESERVED_NAMES)}")
    _check_methods(config.get("methods", {}))
    variants = jobs.expand_variants(config)
    pairs = jobs.expand_pairs(config)
    if not pairs:
        raise ConfigError("pairs: no (large, small) pair; list at least two models of different sizes")
    _check_benchmarks(config, pairs, variants, task_names)
    if config.get("reference") and not Path(config["reference"]).is_file():
        raise ConfigError(f"reference: file {config['reference']!r} does not exist "
                          f"(relative paths are from the working directory)")
    gpu_type = config.get("resources", {}).get("gpu_type")
    if gpu_type is not None and gpu_type not in GPU_MODELS:
        raise ConfigError(f"resources.gpu_type: unknown card {gpu_type!r}; expected one of {', '.join(GPU_MODELS)}")
    clash = set(variants) & set(config.get("benchmarks", {}))
    if clash:
        raise ConfigError(f"methods.{sorted(clash)[0]}: a method variant and a benchmark share this name")


def load_and_check(config: dict, schema_path, config_files=(), task_include_paths=()) -> dict:
    """Reject duplicate keys in the config files, validate against the schema, fill defaults, run
    the semantic checks. Returns config (checked, with defaults)."""
    for path in config_files:
        load_yaml_unique(path)
    for key in NULLABLE_PATHS:
        if isinstance(config.get(key), str) and config[key].strip().lower() in NULL_WORDS:
            config[key] = None
    schema = load_yaml_unique(schema_path)
    validate_schema(config, schema)
    fill_defaults(config, schema)
    apply_mirrors(config)
    validate_config(config, task_names=known_task_names(task_include_paths))
    return config
