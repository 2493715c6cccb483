"""Config helpers for the Snakemake workflow: loading, validation, and expansion into jobs.

Pure functions over the config dict, so `rules/common.smk` stays thin and the rules of a config
(which pairs, which method instances, which jobs, how many GPUs) are unit-testable without
Snakemake. Every rejection is a `ConfigError("<key path>: <what is wrong>")`.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import yaml

from fsgen import atomic

# Pair methods the config may name; "small"/"large" are the single-model baselines (decode_single).
PAIR_METHODS = ("oracle", "contrastive", "proxy", "speculative")
ROUTER_KINDS = ("always", "never", "threshold", "margin", "entropy", "learned")
THRESHOLD_ROUTERS = ("threshold", "margin", "entropy")
# Names that are folders of results/ (or the singles folder) and so cannot be wildcard values.
RESERVED_NAMES = ("single", "tables", "figures", "models", "demo", "tasks", "preflight", "logs", "benchmarks", "fetch")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class ConfigError(ValueError):
    """A config value the workflow cannot run with; the message starts with the key path."""


# ----------------------------------------------------------------------------------- loading
class _UniqueKeyLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader (libyaml's when available: DAG build time) that refuses duplicate mapping keys
    (plain YAML keeps the last one silently)."""


def _construct_unique_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise ConfigError(
                f"{key}: duplicate key (line {seen[key] + 1} and line {key_node.start_mark.line + 1}"
                f" of {loader.name}); each name may appear once"
            )
        seen[key] = key_node.start_mark.line
    return yaml.constructor.SafeConstructor.construct_mapping(loader, node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_unique(path: str | os.PathLike) -> dict:
    """Load a YAML file, raising `ConfigError` on a duplicate key (e.g. a model named twice)."""
    with open(path, encoding="utf-8") as f:
        loader = _UniqueKeyLoader(f)
        loader.name = str(path)  # named in the duplicate-key message
        try:
            return loader.get_single_data() or {}
        finally:
            loader.dispose()


# ------------------------------------------------------------------------------ JSON schema
def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "<top level>"


def validate_schema(config: dict, schema: dict) -> None:
    """Validate against the JSON schema; the first error (in key order) becomes a `ConfigError`."""
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        err = errors[0]
        path = list(err.absolute_path)
        message = err.message
        if err.validator == "additionalProperties":
            # name the unexpected key itself: "modles: unknown key (...)"
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            if extra:
                path.append(extra[0])
                allowed = ", ".join(sorted(err.schema.get("properties", {})))
                message = f"unknown key (typo?); allowed here: {allowed}"
        raise ConfigError(f"{_key_path(path)}: {message}")


def fill_defaults(config, schema: dict):
    """Fill `default`s of the schema into the config in place (objects, named entries, lists)."""
    if isinstance(config, dict) and schema.get("type") == "object":
        for key, sub in schema.get("properties", {}).items():
            if key not in config and "default" in sub:
                config[key] = _copy(sub["default"])
            if key in config:
                fill_defaults(config[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in config.items():
                if key not in schema.get("properties", {}):
                    fill_defaults(value, extra)
    elif isinstance(config, list) and isinstance(schema.get("items"), dict):
        for item in config:
            fill_defaults(item, schema["items"])
    for option in schema.get("oneOf", []) + schema.get("anyOf", []):
        if option.get("type") == "object" and isinstance(config, dict):
            fill_defaults(config, option)
        elif option.get("type") == "array" and isinstance(config, list):
            fill_defaults(config, option)
    return config


def _copy(value):
    return yaml.safe_load(yaml.safe_dump(value))


# ---------------------------------------------------------------------------------- routers
def parse_router(spec, key: str) -> str:
    """Check a router spec (always | never | threshold:T | margin:T | entropy:T | learned:PATH)."""
    if not isinstance(spec, str):
        raise ConfigError(f"{key}: router must be a string like 'entropy:1.0', got {spec!r}")
    kind, _, arg = spec.partition(":")
    if kind not in ROUTER_KINDS:
        raise ConfigError(f"{key}: unknown router {kind!r} in {spec!r}; expected one of {', '.join(ROUTER_KINDS)}")
    if kind in ("always", "never"):
        if arg:
            raise ConfigError(f"{key}: router {kind!r} takes no argument, got {spec!r}")
    elif kind == "learned":
        if not arg:
            raise ConfigError(f"{key}: router 'learned' needs a path, e.g. 'learned:results/router.joblib'")
    else:
        try:
            value = float(arg)
        except ValueError:
            raise ConfigError(f"{key}: malformed threshold {arg!r} in router {spec!r}; expected a number, e.g. '{kind}:0.5'") from None
        if not math.isfinite(value) or value < 0:
            raise ConfigError(f"{key}: threshold in router {spec!r} must be a finite number ≥ 0")
    return spec


def router_slug(spec: str) -> str:
    """Router spec as a path-safe suffix: 'entropy:0.5' -> 'entropy0.5'."""
    kind, _, arg = spec.partition(":")
    if kind == "learned":
        arg = Path(arg).stem
    return re.sub(r"[^A-Za-z0-9._-]", "-", kind + arg)


# ---------------------------------------------------------------------------------- methods
DECODE_KEYS = ("method", "router", "alpha", "beta", "formula", "k", "temperature", "top_k")


def expand_methods(config: dict) -> dict[str, dict]:
    """Method instance name -> decode parameters. A `routers:` list sweeps: one instance per router,
    named `<name>-<router slug>` (e.g. `oracle_entropy-entropy0.5`)."""
    instances = {}
    for name, spec in config.get("methods", {}).items():
        routers = spec.get("routers")
        if routers:
            for i, router in enumerate(routers):
                parse_router(router, f"methods.{name}.routers[{i}]")
            named = [(f"{name}-{router_slug(r)}", r) for r in routers]
        else:
            parse_router(spec.get("router", "always"), f"methods.{name}.router")
            named = [(name, spec.get("router", "always"))]
        for instance, router in named:
            params = {k: spec[k] for k in DECODE_KEYS if k in spec}
            params["router"] = router
            if instance in instances:
                raise ConfigError(f"methods.{name}: instance name {instance!r} is produced twice")
            instances[instance] = params
    return instances


# ----------------------------------------------------------------------------- models, pairs
def model_params(config: dict, name: str, key: str = "models") -> float:
    models = config.get("models", {})
    if name not in models:
        known = ", ".join(models) or "none"
        raise ConfigError(f"{key}: model {name!r} has no entry under models (known: {known})")
    return models[name]["params"]


def expand_pairs(config: dict) -> list[tuple[str, str]]:
    """(large, small) base pairs: `all_ordered` = every pair of distinct sizes, larger first;
    an explicit list is checked (both models exist, large strictly larger than small)."""
    pairs = config.get("pairs", {})
    out = []
    if isinstance(pairs, dict):
        names = pairs.get("all_ordered", [])
        for i, name in enumerate(names):
            model_params(config, name, f"pairs.all_ordered[{i}]")
        if len(set(names)) != len(names):
            raise ConfigError("pairs.all_ordered: a model is listed twice")
        for a in names:
            for b in names:
                if model_params(config, a) > model_params(config, b):
                    out.append((a, b))
        # largest pairs first, then by small size: stable and readable in logs
        out.sort(key=lambda p: (-model_params(config, p[0]), -model_params(config, p[1])))
    else:
        for i, pair in enumerate(pairs):
            large, small = pair["large"], pair["small"]
            pl = model_params(config, large, f"pairs[{i}].large")
            ps = model_params(config, small, f"pairs[{i}].small")
            if not pl > ps:
                raise ConfigError(
                    f"pairs[{i}]: small model {small!r} ({ps:g} params) is not smaller than large model "
                    f"{large!r} ({pl:g} params)"
                )
            if (large, small) in out:
                raise ConfigError(f"pairs[{i}]: pair {large}__{small} is listed twice")
            out.append((large, small))
    return out


def variant(config: dict, name: str, benchmark: str) -> str:
    """The model a benchmark decodes with: the base model, or its tuned variant (`models: tuned`)."""
    if config["benchmarks"][benchmark].get("models", "base") == "tuned":
        return config["models"][name]["tuned"]
    return name


def benchmark_methods(config: dict, benchmark: str) -> list[str]:
    """Method instances run on a benchmark; proxy tuning needs base models, so a benchmark that
    decodes with the tuned variants skips it."""
    tuned = config["benchmarks"][benchmark].get("models", "base") == "tuned"
    return [m for m, p in expand_methods(config).items() if not (tuned and p["method"] == "proxy")]


def decode_jobs(config: dict) -> list[dict]:
    """Every pair job: {benchmark, method, large, small}."""
    pairs = expand_pairs(config)
    return [
        {"benchmark": b, "method": m, "large": variant(config, lg, b), "small": variant(config, sm, b)}
        for b in config.get("benchmarks", {})
        for m in benchmark_methods(config, b)
        for lg, sm in pairs
    ]


def single_jobs(config: dict) -> list[dict]:
    """Every single-model baseline {benchmark, model}: each model of a pair, once per benchmark."""
    pairs = expand_pairs(config)
    jobs = []
    for b in config.get("benchmarks", {}):
        seen = []
        for lg, sm in pairs:
            for name in (variant(config, lg, b), variant(config, sm, b)):
                if name not in seen:
                    seen.append(name)
        jobs += [{"benchmark": b, "model": name} for name in sorted(seen, key=lambda n: model_params(config, n))]
    return jobs


def trained_models(config: dict) -> list[str]:
    """Models the workflow trains itself (the demo family), tuned variants included."""
    return [name for name, m in config.get("models", {}).items() if m.get("train")]


def hub_models(config: dict) -> list[str]:
    """Models to pre-download: not trained here and not an existing local folder."""
    return [
        name
        for name, m in config.get("models", {}).items()
        if not m.get("train") and not Path(m["path"]).is_dir()
    ]


# ------------------------------------------------------------------------------- resources
def model_gpus(config: dict, name: str) -> int:
    return int(config["models"][name].get("gpus", 0))


def pair_gpus(config: dict, large: str, small: str, method: str) -> int:
    """GPUs of a pair job: every model it loads (large, small, and the tuned small for proxy),
    summed (`resources.pair_gpus: sum`, default: each model keeps its own memory) or their max
    (`max`: the models share the large model's GPUs)."""
    names = [large, small]
    if expand_methods(config)[method]["method"] == "proxy":
        names.append(config["models"][small]["tuned"])
    counts = [model_gpus(config, n) for n in names]
    how = config.get("resources", {}).get("pair_gpus", "sum")
    return max(counts) if how == "max" else sum(counts)


def grown(base: float, attempt: int, factor: float) -> int:
    """A resource that grows with the attempt number (retries after OOM / timeout)."""
    return int(math.ceil(base * factor ** (attempt - 1)))


def attempt_batch_size(batch_size: int, attempt: int) -> int:
    """Batch size for an attempt: halved on each retry (a row's result does not depend on it)."""
    return max(1, int(batch_size) >> (attempt - 1))


# ------------------------------------------------------------------------------ task names
def _yaml_task_names(root: Path) -> set[str]:
    """Names defined by lm-eval task YAMLs under root (`task:`, `group:`, `tag:` values), read with
    a line scan: parsing ~14k YAMLs with lm-eval's TaskManager takes ~14 s, this ~1 s."""
    names = set()
    head = re.compile(r"^(task|group|tag):[ \t]*([^#\n]*)")
    for folder, _, files in os.walk(root):
        for f in files:
            if not f.endswith((".yaml", ".yml")):
                continue
            in_tag_list = False
            for line in open(os.path.join(folder, f), encoding="utf-8", errors="replace"):
                m = head.match(line)
                if m:
                    value = m.group(2).strip().strip("'\"")
                    in_tag_list = m.group(1) == "tag" and not value
                    if value.startswith("["):
                        names.update(v.strip().strip("'\"") for v in value.strip("[]").split(","))
                    elif value:
                        names.add(value)
                elif in_tag_list and line.lstrip().startswith("- "):
                    names.add(line.strip()[2:].strip().strip("'\""))
                elif line.strip() and not line.startswith((" ", "\t", "-")):
                    in_tag_list = False
    return names


def builtin_task_names(cache_dir: str | os.PathLike | None = ".snakemake/fsgen") -> set[str]:
    """lm-eval's built-in task names, cached per lm-eval install (version and location) in
    cache_dir (None = no cache): the scan reads ~14k files."""
    import json
    from importlib.metadata import version

    import lm_eval

    root = Path(lm_eval.__file__).parent / "tasks"
    key = re.sub(r"[^A-Za-z0-9.]", "_", f"{version('lm_eval')}-{root}")
    cache = Path(cache_dir) / f"lm_eval_tasks-{key}.json" if cache_dir else None
    if cache and cache.exists():
        try:
            return set(json.loads(cache.read_text()))
        except ValueError:
            pass  # a torn write: rebuild
    names = _yaml_task_names(root)
    if cache:
        atomic.write_text(cache, json.dumps(sorted(names)))
    return names


def known_task_names(include_paths: list[str | os.PathLike] = (), cache_dir=".snakemake/fsgen") -> set[str]:
    """Task/group/tag names of lm-eval's built-in tasks plus those under include_paths."""
    names = builtin_task_names(cache_dir)
    for p in include_paths:
        if Path(p).is_dir():
            names |= _yaml_task_names(Path(p))
    return names


# ------------------------------------------------------------------------------ validation
def validate_config(config: dict, task_names: set[str] | None = None) -> None:
    """Checks beyond the JSON schema (run after it, on a config with defaults filled).
    `task_names`: when given, each benchmark's task must be among them."""
    models = config.get("models", {})
    for name, m in models.items():
        key = f"models.{name}"
        if not NAME_RE.match(name) or "__" in name or name in RESERVED_NAMES:
            raise ConfigError(f"{key}: model name must match {NAME_RE.pattern}, not contain '__', and not be one of {', '.join(RESERVED_NAMES)}")
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
    for kind in ("methods", "benchmarks"):
        for name in config.get(kind, {}):
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                raise ConfigError(f"{kind}.{name}: name must match {NAME_RE.pattern} and not be one of {', '.join(RESERVED_NAMES)}")
    for name, spec in config.get("methods", {}).items():
        if "router" in spec and "routers" in spec:
            raise ConfigError(f"methods.{name}: give either router (one) or routers (a sweep), not both")
        if spec["method"] != "contrastive" and ("beta" in spec or "formula" in spec):
            raise ConfigError(f"methods.{name}: beta/formula only apply to method contrastive, not {spec['method']}")
        if spec["method"] != "speculative" and ("k" in spec or "temperature" in spec):
            raise ConfigError(f"methods.{name}: k/temperature only apply to method speculative, not {spec['method']}")
        if spec["method"] not in ("contrastive", "proxy") and spec.get("alpha") is not None:
            raise ConfigError(f"methods.{name}.alpha: alpha only applies to contrastive and proxy, not {spec['method']}")
    methods = expand_methods(config)
    instance_names = set(methods)
    pairs = expand_pairs(config)
    if not pairs:
        raise ConfigError("pairs: no (large, small) pair; list at least two models of different sizes")
    uses_proxy = any(p["method"] == "proxy" for p in methods.values())
    for b, bench in config.get("benchmarks", {}).items():
        tuned_bench = bench.get("models", "base") == "tuned"
        for lg, sm in pairs:
            if tuned_bench:
                for name in (lg, sm):
                    if not models[name].get("tuned"):
                        raise ConfigError(f"benchmarks.{b}.models: 'tuned' needs a tuned variant of every paired model; models.{name}.tuned is not set")
            elif uses_proxy and not models[sm].get("tuned"):
                proxy = next(m for m, p in methods.items() if p["method"] == "proxy")
                raise ConfigError(
                    f"methods.{proxy}: proxy tuning needs a tuned variant of the small model; "
                    f"models.{sm}.tuned is not set (pair {lg}__{sm})"
                )
        if task_names is not None and bench["task"] not in task_names:
            raise ConfigError(f"benchmarks.{b}.task: unknown lm-eval task {bench['task']!r} (not built into lm-eval nor under workflow/tasks/)")
        data = (bench.get("data") or {}).get("path")
        # a file under results/ is made by the workflow (the demo data); others must exist now
        if data and not Path(data).parts[:1] == ("results",) and not Path(data).exists():
            raise ConfigError(f"benchmarks.{b}.data.path: local data file {data!r} does not exist")
    if config.get("reference") and not Path(config["reference"]).is_file():
        raise ConfigError(f"reference: file {config['reference']!r} does not exist (relative paths are from the working directory)")
    clash = instance_names & set(config.get("benchmarks", {}))
    if clash:
        raise ConfigError(f"methods.{sorted(clash)[0]}: a method and a benchmark share this name")


def load_and_check(config: dict, schema_path, config_files=(), task_include_paths=()) -> dict:
    """Everything the Snakefile does before building the DAG: reject duplicate keys in the config
    files, validate against the schema, fill defaults, run the semantic checks. Returns config."""
    for path in config_files:
        load_yaml_unique(path)
    schema = load_yaml_unique(schema_path)
    validate_schema(config, schema)
    fill_defaults(config, schema)
    validate_config(config, task_names=known_task_names(task_include_paths))
    return config
