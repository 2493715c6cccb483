"""The jobs a config asks for: method variants, pairs, decode jobs and their identity.

Words: a *method* is an algorithm of the registry (`fsgen.decoding.methods`: oracle, contrastive,
...); a *variant* is one configured instance of a method, an entry of the config's `methods:`
(e.g. `oracle_entropy-entropy0.5`: oracle with one router of a sweep). Single-model baselines run
the method `single`, under the reserved variant name `single`.

Pure functions over the checked config dict, so `rules/common.smk` stays thin and every rule of a
config (which pairs, which variants, which jobs, which models a job loads) is unit-testable
without Snakemake.
"""

from __future__ import annotations

import re
from pathlib import Path

from fsgen.decoding.config import FIELDS as DECODE_FIELDS
from fsgen.decoding.methods import get_method
from fsgen.decoding.routers import parse_router_spec
from fsgen.pipeline.config import ConfigError

SINGLE = "single"  # the method (and reserved variant name) of single-model baselines
# Names that are folders of results/ (or the singles folder) and so cannot be wildcard values.
RESERVED_NAMES = (SINGLE, "tables", "figures", "models", "demo", "tasks", "preflight", "logs", "benchmarks", "fetch",
                  "reference")
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------------- variants
def router_spec(spec, key: str):
    """The parsed router spec (fsgen.decoding.routers), as a ConfigError naming the key."""
    try:
        return parse_router_spec(spec)
    except ValueError as err:
        raise ConfigError(f"{key}: {err}") from None


def expand_variants(config: dict) -> dict[str, dict]:
    """Variant name -> its decode settings (DecodeConfig fields). A `routers:` list sweeps: one
    variant per router, named `<name>-<router slug>` (e.g. `oracle_entropy-entropy0.5`); a
    `seeds:` list (sampled decoding, temperature > 0) one variant per seed, named
    `<name>[-<router slug>]-seed<N>` (e.g. `speculative_sampled-seed1`)."""
    variants = {}
    for name, spec in config.get("methods", {}).items():
        routers = spec.get("routers")
        if routers:
            parsed = [router_spec(r, f"methods.{name}.routers[{i}]") for i, r in enumerate(routers)]
            named = [(f"{name}-{p.slug}", r) for p, r in zip(parsed, routers)]
        else:
            router_spec(spec.get("router", "always"), f"methods.{name}.router")
            named = [(name, spec.get("router", "always"))]
        seeds = _variant_seeds(name, spec)
        for routed, router in named:
            for variant, seed in ([(routed, None)] if seeds is None else [(seed_variant(routed, s), s) for s in seeds]):
                settings = {k: v for k, v in spec.items() if k in DECODE_FIELDS}
                settings["router"] = router
                if seed is not None:
                    settings["seed"] = seed
                if variant in variants:
                    raise ConfigError(f"methods.{name}: variant name {variant!r} is produced twice")
                variants[variant] = settings
    return variants


SEED_SUFFIX = "-seed"  # a seeds sweep's variants: <name>-seed<N>


def seed_variant(name: str, seed: int) -> str:
    """The variant of one seed of a `seeds:` sweep."""
    return f"{name}{SEED_SUFFIX}{int(seed)}"


def split_seed_variant(variant: str) -> tuple[str, int | None]:
    """(the variant without its seed suffix, the seed) of a `seeds:` sweep's variant; (variant,
    None) for any other variant. The inverse of `seed_variant`."""
    head, sep, tail = variant.rpartition(SEED_SUFFIX)
    if sep and head and re.fullmatch(r"[0-9]+", tail):
        return head, int(tail)
    return variant, None


def _variant_seeds(name: str, spec: dict) -> list[int] | None:
    """The `seeds:` of a variant (None without), checked: only a sampled decode (a method that reads
    `temperature`, temperature > 0) depends on its seed."""
    seeds = spec.get("seeds")
    if seeds is None:
        return None
    method = get_method(spec["method"])
    if "temperature" not in method.params or not float(spec.get("temperature") or 0) > 0:
        raise ConfigError(f"methods.{name}.seeds: seeds only change a sampled decode (a method with "
                          f"temperature > 0, e.g. speculative); {spec['method']} here is greedy")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"methods.{name}.seeds: a seed is listed twice")
    return [int(s) for s in seeds]


def decode_settings(config: dict, variant: str) -> dict:
    """The DecodeConfig settings a decode job of `variant` runs with (`single`: the baseline)."""
    return {"method": SINGLE} if variant == SINGLE else expand_variants(config)[variant]


def variant_method(config: dict, variant: str):
    """The registry entry of the variant's method."""
    return get_method(decode_settings(config, variant)["method"])


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


def tuned_benchmark(config: dict, benchmark: str) -> bool:
    """Whether a benchmark decodes with the tuned variants (`models: tuned`, the chat benchmarks)."""
    return config["benchmarks"][benchmark].get("models", "base") == "tuned"


def chat_template(config: dict, benchmark: str) -> bool:
    """Whether a benchmark's prompts are rendered with the tokenizer's chat template: the entry's
    `chat_template`, or (null) true exactly when it decodes with the tuned (chat) variants."""
    value = config["benchmarks"][benchmark].get("chat_template")
    return tuned_benchmark(config, benchmark) if value is None else bool(value)


def method_pair(config: dict, benchmark: str, method, large: str, small: str) -> tuple[str, str]:
    """(large, small) a pair job of registry method `method` decodes `benchmark` with, for the base
    pair (large, small): the tuned variants on a `models: tuned` benchmark, except for a method
    that loads the small model's tuned variant itself (proxy tuning), which keeps the base pair:
    proxy tuning steers the base large model with (small tuned - small), as in the FS-GEN paper's
    MT-Bench proxy points."""
    if not tuned_benchmark(config, benchmark) or method.needs_tuned_small:
        return large, small
    return config["models"][large]["tuned"], config["models"][small]["tuned"]


def pair_models(config: dict, benchmark: str, variant: str, large: str, small: str) -> tuple[str, str]:
    """`method_pair` for a configured variant."""
    return method_pair(config, benchmark, variant_method(config, variant), large, small)


def decode_jobs(config: dict) -> list[dict]:
    """Every pair job: {benchmark, variant, large, small} (every variant on every benchmark)."""
    pairs = expand_pairs(config)
    jobs = []
    for b in config.get("benchmarks", {}):
        for v in expand_variants(config):
            for lg, sm in pairs:
                large, small = pair_models(config, b, v, lg, sm)
                jobs.append({"benchmark": b, "variant": v, "large": large, "small": small})
    return jobs


def counterfactual_variants(config: dict) -> list[str]:
    """Variants whose jobs get counterfactual continuations (`counterfactual.positions` > 0): a
    method with a fast path under the `always` router (System 2 decides every token: the oracle)."""
    if not int(config.get("counterfactual", {}).get("positions", 0)) > 0:
        return []
    return [v for v, s in expand_variants(config).items()
            if get_method(s["method"]).fast_path and parse_router_spec(s.get("router", "always")).kind == "always"]


def counterfactual_jobs(config: dict) -> list[dict]:
    """Every oracle job {benchmark, variant, large, small} that gets counterfactual continuations."""
    chosen = set(counterfactual_variants(config))
    return [job for job in decode_jobs(config) if job["variant"] in chosen]


def single_jobs(config: dict) -> list[dict]:
    """Every single-model baseline {benchmark, model}, once per benchmark, by size: each large or
    small model of the benchmark's pair jobs (a pair's statistics compare with its large-alone
    and small-alone runs) and, for proxy tuning, the large model's tuned variant (the model that
    proxy tuning approximates: the reference of its gap share)."""
    pair_jobs, jobs = decode_jobs(config), []
    for b in config.get("benchmarks", {}):
        seen = []
        for job in (j for j in pair_jobs if j["benchmark"] == b):
            names = [job["large"], job["small"], proxy_reference(config, job)]
            seen += [name for name in names if name and name not in seen]
        jobs += [{"benchmark": b, "model": name} for name in sorted(seen, key=lambda n: model_params(config, n))]
    return jobs


def proxy_reference(config: dict, job: dict) -> str | None:
    """The model a proxy-tuning job approximates: its large model's tuned variant (decoded alone by
    single_jobs); None for other methods or a large model without one."""
    if not variant_method(config, job["variant"]).needs_tuned_small:
        return None
    return config["models"][job["large"]].get("tuned")


def proxy_gap_jobs(config: dict) -> list[tuple[dict, str]]:
    """(proxy job, its reference) for every pair job that has a proxy_reference (rule proxy_gap)."""
    return [(job, tuned) for job in decode_jobs(config) if (tuned := proxy_reference(config, job))]


def job_models(config: dict, job: dict) -> dict[str, str]:
    """Role -> model name of the models a job loads: a pair job's method roles (large, small, and
    the small model's tuned variant for proxy tuning), or a single job's one model."""
    if "model" in job:
        return {"model": job["model"]}
    by_role = {"large": job["large"], "small": job["small"]}
    if "small_tuned" in variant_method(config, job["variant"]).roles:
        by_role["small_tuned"] = config["models"][job["small"]]["tuned"]
    return {role: by_role[role] for role in variant_method(config, job["variant"]).roles}


def job_identity(config: dict, job: dict) -> dict:
    """The job as the analysis records it (fsgen.analysis.job.JOB_KEYS): its variant and the
    variant's method of the registry (single-model baselines: both `single`)."""
    if "model" in job:
        m = job["model"]
        params = config["models"][m]["params"]
        return {"benchmark": job["benchmark"], "variant": SINGLE, "method": SINGLE, "router": "never",
                "large": m, "small": m, "large_params": params, "small_params": params, "k": None}
    settings = decode_settings(config, job["variant"])
    return {"benchmark": job["benchmark"], "variant": job["variant"], "method": settings["method"],
            "large": job["large"], "small": job["small"], "router": settings.get("router", "always"),
            "large_params": config["models"][job["large"]]["params"],
            "small_params": config["models"][job["small"]]["params"], "k": settings.get("k")}


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
