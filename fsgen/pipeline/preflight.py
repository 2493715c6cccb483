"""Cheap CPU checks before any GPU job: every problem of a config, one line each, none decoded.

`preflight(config, include_path)` takes the whole checked config (the rule passes it as is) and
returns the problems, each naming the config key and the model or task at fault, e.g.

    models.qwen-72b.path: hub model 'Qwen/Qwen1.5-72B' is not in the offline cache ...
    pairs.qwen-72b__llama-7b: tokenizers differ: models ... have different tokenizers (...)
    benchmarks.mbpp.allow_code_execution: task 'mbpp' scores by executing model-written code ...

Checked: every model of a pair (and the tuned variant of every small model that proxy tuning
uses) resolves - a local folder with config.json and weights, or a hub id in the offline cache
(HF_HUB_OFFLINE=1) or on the hub; the models of each pair share a tokenizer (padded embedding
matrices are fine: only the tokenizers are compared, no weights are loaded); every benchmark's
task is known to lm-eval (built in or under the include paths), its local data files exist and
are not empty, its hub dataset is in the offline cache; a task that executes model-written code
has the explicit opt-in and the sandbox works here; learned routers' files exist.
"""

from __future__ import annotations

import os
from pathlib import Path

WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf", "*.safetensors.index.json")
LOCAL_BUILDERS = ("json", "csv", "parquet", "arrow", "text")


class PreflightError(RuntimeError):
    """The config cannot run; the message lists every problem, one per line."""


def _one_line(err) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())[:400]


def _offline(flag: str) -> bool:
    return os.environ.get(flag, "").strip().lower() in ("1", "true", "yes", "on")


# ---------------------------------------------------------------- models


def model_problem(path: str) -> str | None:
    """Why `path` (folder or hub id) cannot be loaded, or None."""
    from fsgen.fingerprint import looks_local

    if looks_local(path):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            return f"model folder {path!r} does not exist"
        if not (folder / "config.json").is_file():
            return f"model folder {path!r} has no config.json (not a Hugging Face model folder)"
        if not any(any(folder.glob(p)) for p in WEIGHT_PATTERNS):
            return f"model folder {path!r} has no weight files ({', '.join(WEIGHT_PATTERNS[:2])}, ...)"
        return None
    from huggingface_hub import constants, try_to_load_from_cache

    if _offline("HF_HUB_OFFLINE") or constants.HF_HUB_OFFLINE:
        if isinstance(try_to_load_from_cache(path, "config.json", cache_dir=constants.HF_HUB_CACHE), str):
            return None
        return (f"hub model {path!r} is not in the offline cache {constants.HF_HUB_CACHE} "
                f"(HF_HUB_OFFLINE=1; run `snakemake fetch` where there is internet)")
    try:
        from huggingface_hub import HfApi

        if HfApi().file_exists(path, "config.json"):
            return None
        return f"hub model {path!r} has no config.json"
    except Exception as err:  # noqa: BLE001 - any failure to resolve is the finding
        return f"hub model {path!r} cannot be resolved: {_one_line(err)}"


def base_pairs(config: dict) -> list[tuple[str, str]]:
    """(large, small) pairs of `pairs`: [[l, s]], [{large, small}] or {all_ordered: [...]}."""
    pairs = config.get("pairs") or []
    if isinstance(pairs, dict):
        from fsgen.pipeline.jobs import expand_pairs

        return list(expand_pairs(config))
    return list(dict.fromkeys((p["large"], p["small"]) if isinstance(p, dict) else tuple(p) for p in pairs))


def used_pairs(config: dict) -> list[tuple[str, str]]:
    """(large, small) pairs decoded: the base pairs, and for a benchmark that decodes with the
    tuned variants (`models: tuned`) the pairs of their tuned variants too."""
    base = base_pairs(config)
    models = config.get("models", {})
    out = list(dict.fromkeys(base))
    if any(b.get("models") == "tuned" for b in (config.get("benchmarks") or {}).values()):
        for large, small in base:
            tuned = (models.get(large, {}).get("tuned"), models.get(small, {}).get("tuned"))
            if all(tuned) and tuned not in out:
                out.append(tuned)
    return out


def used_models(config: dict) -> list[str]:
    """Every model a decode job loads: those of the pairs and their tuned variants."""
    models = config.get("models", {})
    names = {n for pair in used_pairs(config) for n in pair}
    names |= {models[n]["tuned"] for n in list(names) if models.get(n, {}).get("tuned") in models}
    return sorted(n for n in names if n in models)


def uses_proxy(config: dict) -> bool | None:
    """Whether a method loads the small model's tuned variant, i.e. proxy tuning (None when the
    config lists no methods)."""
    from fsgen.decoding.methods import METHODS

    methods = config.get("methods")
    if methods is None:
        return None
    return any(METHODS[spec["method"]].needs_tuned_small for spec in methods.values() if spec.get("method") in METHODS)


def _model_groups(config: dict, problems: list[str]) -> list[tuple[str, list[str]]]:
    """(pair label, model names that must share a tokenizer) for each pair."""
    models = config.get("models", {})
    proxy = uses_proxy(config)
    base = base_pairs(config)
    groups = []
    for large, small in used_pairs(config):
        label = f"{large}__{small}"
        names = [large, small]
        for name in names:
            if name not in models:
                problems.append(f"pairs.{label}: model {name!r} has no entry under models")
        # proxy tuning runs on the base pairs, on every benchmark (a tuned-model one too:
        # fsgen.pipeline.jobs.method_pair), with the small model's tuned variant
        tuned = models.get(small, {}).get("tuned") if (large, small) in base else None
        if proxy and not tuned and small in models and (large, small) in base:
            problems.append(f"models.{small}.tuned: proxy tuning of pair {label} needs a tuned variant "
                            f"of the small model {small!r}, and none is set")
        if tuned and (proxy or proxy is None):
            if tuned not in models:
                problems.append(f"models.{small}.tuned: tuned variant {tuned!r} has no entry under models")
            else:
                names.append(tuned)
        groups.append((label, [n for n in names if n in models]))
    return groups


def check_models(config: dict, problems: list[str]) -> None:
    from fsgen.decoding.models import TokenizerMismatch, check_shared_tokenizer, load_tokenizer

    models = config.get("models", {})
    groups = _model_groups(config, problems)
    resolvable = {}
    for name in dict.fromkeys(n for _, names in groups for n in names):
        if models[name].get("train"):
            continue  # made by the workflow (the demo family); its decode jobs check it before loading weights
        problem = model_problem(str(models[name]["path"]))
        if problem:
            problems.append(f"models.{name}.path: {problem}")
        resolvable[name] = problem is None
    tokenizers = {}
    for name, ok in resolvable.items():
        if ok:
            try:
                tokenizers[name] = load_tokenizer(str(models[name]["path"]),
                                                  trust_remote_code=bool(models[name].get("trust_remote_code")))
            except Exception as err:  # noqa: BLE001
                problems.append(f"models.{name}.path: tokenizer of {models[name]['path']!r} cannot be loaded: "
                                f"{_one_line(err)}")
    for label, names in groups:
        present = {n: tokenizers[n] for n in names if n in tokenizers}
        if len(present) > 1:
            try:
                check_shared_tokenizer(present)
            except TokenizerMismatch as err:
                problems.append(f"pairs.{label}: tokenizers differ: {_one_line(err)}")


# ---------------------------------------------------------------- benchmarks


def _task_manager(include_paths: list[str], include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_paths or None, include_defaults=include_defaults)


def _dataset_problem(cfg: dict) -> str | None:
    """Why a task's own dataset is not reachable offline, or None."""
    path = cfg.get("dataset_path")
    if not path:
        return None
    if path in LOCAL_BUILDERS:
        files = (cfg.get("dataset_kwargs") or {}).get("data_files") or {}
        flat = files.values() if isinstance(files, dict) else [files]
        for item in flat:
            for file in item if isinstance(item, list) else [item]:
                if not Path(file).exists():
                    return f"data file {file!r} of the task does not exist"
        return None
    if Path(path).exists() or not (_offline("HF_DATASETS_OFFLINE") or _offline("HF_HUB_OFFLINE")):
        return None
    from huggingface_hub import constants

    home = Path(constants.HF_HOME)
    candidates = [Path(constants.HF_HUB_CACHE) / f"datasets--{path.replace('/', '--')}",
                  Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets")) / path.replace("/", "___")]
    for candidate in candidates:
        siblings = candidate.parent.iterdir() if candidate.parent.is_dir() else []
        if any(s.name.lower() == candidate.name.lower() for s in siblings):
            return None
    return f"dataset {path!r} is not in the offline cache {home} (run `snakemake fetch` where there is internet)"


def _data_problem(data: dict) -> str | None:
    for key in ("path", "fewshot_path"):
        file = data.get(key)
        if not file:
            continue
        p = Path(file).expanduser()
        if not p.exists():
            return f"data file {file!r} does not exist"
        if (p.is_file() and p.stat().st_size == 0) or (p.is_dir() and not any(p.iterdir())):
            return f"data file {file!r} is empty"
        if p.is_file() and not os.access(p, os.R_OK):
            return f"data file {file!r} is not readable"
    return None


def check_benchmarks(config: dict, include_path, problems: list[str], include_defaults: bool | None = None) -> None:
    from fsgen.harness.tasks import CODE_EXECUTION_TASKS, LOCAL_SUFFIX, TASKS_DIR

    benchmarks = config.get("benchmarks", {})
    if not benchmarks:
        return
    paths = [str(p) for p in ([TASKS_DIR] + ([include_path] if include_path else [])) if Path(p).is_dir()]
    builtins = bool(include_defaults)
    manager = _task_manager(paths, include_defaults=builtins)
    wanted = {b["task"] for b in benchmarks.values()}
    if include_defaults is None and wanted - set(manager.all_tasks):
        builtins = True
        manager = _task_manager(paths, include_defaults=True)  # lm-eval's built-ins (slow index)
    needs_sandbox = []
    for name, bench in benchmarks.items():
        key = f"benchmarks.{name}"
        task = bench["task"]
        if task not in manager.all_tasks:
            where = " and lm-eval's built-ins" if builtins else ""
            problems.append(f"{key}.task: lm-eval task {task!r} not found (searched {', '.join(paths)}{where})")
            continue
        cfg = dict(getattr(manager._entry(task), "cfg", None) or {})  # the task's YAML keys
        data = bench.get("data")
        if data:
            problem = _data_problem(data)
            if problem:
                problems.append(f"{key}.data.path: {problem} (task {task!r})")
            if include_path and f"{task}{LOCAL_SUFFIX}" not in manager.all_tasks:
                problems.append(f"{key}.data: derived task {task + LOCAL_SUFFIX!r} is missing under {include_path} "
                                f"(rule task_overrides writes it)")
        else:
            problem = _dataset_problem(cfg)
            if problem:
                problems.append(f"{key}.task: {problem} (task {task!r})")
        if task in CODE_EXECUTION_TASKS or cfg.get("unsafe_code"):
            if not bench.get("allow_code_execution"):
                problems.append(f"{key}.allow_code_execution: task {task!r} scores by executing model-written "
                                f"code; set allow_code_execution: true for it to opt in")
            else:
                needs_sandbox.append(key)
    if needs_sandbox:
        from fsgen.sandbox import run_python

        smoke = run_python("print('ok')", timeout_s=30)
        if not smoke.passed:
            problems.append(f"{needs_sandbox[0]}.allow_code_execution: the code sandbox cannot run programs here "
                            f"({smoke.status}: {_one_line(smoke.stderr)[:200]})")


def check_routers(config: dict, problems: list[str]) -> None:
    """Every router spec parses, and a learned router's file exists now (not on a GPU node later)."""
    from fsgen.decoding.routers import parse_router_spec

    for name, spec in (config.get("methods") or {}).items():
        routers = spec.get("routers") or [spec.get("router", "always")]
        for router in routers:
            try:
                parsed = parse_router_spec(router)
            except ValueError as err:
                problems.append(f"methods.{name}.router: {_one_line(err)}")
                continue
            if parsed.kind == "learned" and not Path(parsed.path).is_file():
                problems.append(f"methods.{name}.router: learned router file {parsed.path!r} does not exist")


# ---------------------------------------------------------------- entry points


def preflight(config: dict, include_path=None, include_defaults: bool | None = None,
              benchmark: str | None = None) -> list[str]:
    """Every problem found, one line each (empty: the config can run).

    `include_path`: the folder of derived task YAMLs (rule task_overrides). `include_defaults`:
    search lm-eval's built-in tasks (None: only when a task is not under our include paths).
    `benchmark`: check that benchmark only (its task, data, the models of its jobs; the workflow
    runs one preflight per benchmark). Models the workflow trains are checked by their decode
    jobs (tokenizers before weights), as they do not exist before training.
    """
    if benchmark is not None:
        config = {**config, "benchmarks": {benchmark: config["benchmarks"][benchmark]}}
    problems: list[str] = []
    check_models(config, problems)
    check_benchmarks(config, include_path, problems, include_defaults)
    check_routers(config, problems)
    return [" ".join(p.split()) for p in problems]


def check_or_raise(config: dict, include_path=None, include_defaults: bool | None = None,
                   benchmark: str | None = None) -> None:
    problems = preflight(config, include_path, include_defaults, benchmark)
    if problems:
        raise PreflightError(f"preflight found {len(problems)} problem(s); nothing was decoded:\n" + "\n".join(problems))
