"""Benchmarks as lm-eval tasks: local-data overrides, the task manager, seeded sample selection.

A benchmark entry (config) looks like
    {"task": "gsm8k_cot", "data": {"path": "/x/gsm8k.jsonl", "split": "test"} or None,
     "limit": 500, "seed": 789798, "num_fewshot": 8 or None, "max_new_tokens": 256,
     "batch_size": 8, "allow_code_execution": false, "models": "base", "chat_template": null}

With `data`, the benchmark runs a derived task `<task>__local`, written as a YAML that
`include:`s the original task's YAML (built-in or ours under fsgen/harness/lm_eval_tasks/) and replaces only
where the documents come from. Offline compute nodes can so run from a pre-fetched copy with
lm-eval's own prompt, few-shot examples, filters and metrics.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import yaml

from fsgen import atomic
from fsgen.decoding.config import DEFAULTS

log = logging.getLogger(__name__)

LOCAL_SUFFIX = "__local"
# our own task YAMLs (mtbench, mbpp_local, mmlu_stem_cot; the demo's arith), package data
TASKS_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"  # shipped with the package
# tasks whose metric executes model-written code: they need allow_code_execution: true
CODE_EXECUTION_TASKS = frozenset({"mbpp", "mbpp_local", "mbpp_plus", "humaneval", "humaneval_plus"})
# file suffix -> datasets builder
DATA_FORMATS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}

# The one home of a benchmark entry's defaults (the config schema's `null` means these); the
# generation budget and batch size are the decoding engine's (fsgen.decoding.DecodeConfig).
BENCHMARK_DEFAULTS = {
    "data": None,  # local copy of the test documents (None: the task's own dataset_path)
    "limit": None,  # documents per run (None: all); chosen at random with `seed`
    "seed": 42,  # sample selection and lm-eval's random/numpy/torch/few-shot seeds
    "num_fewshot": None,  # None: the task's own
    "max_new_tokens": DEFAULTS.max_new_tokens,  # lm-eval max_gen_toks for generate_until tasks
    "batch_size": DEFAULTS.batch_size,
    "allow_code_execution": False,
    "models": "base",  # decoded with the base models or their tuned (chat) variants (the pipeline's job models)
    "chat_template": None,  # render prompts with the tokenizer's chat template; None: true when `models` is tuned
}
MODEL_VARIANTS = ("base", "tuned")


class TaskNotFound(LookupError):
    pass


class CodeExecutionNotAllowed(RuntimeError):
    pass


def benchmark_entry(name: str, entry: dict) -> dict:
    """The entry with defaults filled in (keys the harness does not use are dropped, with a warning);
    `chat_template: null` resolved to a bool (true for `models: tuned`)."""
    if "task" not in entry:
        raise ValueError(f"benchmark {name!r}: missing key 'task' (an lm-eval task name)")
    unknown = set(entry) - set(BENCHMARK_DEFAULTS) - {"task"}
    if unknown:
        log.warning("benchmark %r: keys %s are not harness keys; ignored here", name, sorted(unknown))
    # None for a key with a default means that default (the config schema's `null`)
    given = {k: v for k, v in entry.items() if k not in unknown and not (v is None and BENCHMARK_DEFAULTS.get(k) is not None)}
    full = {**BENCHMARK_DEFAULTS, **given}
    if full["models"] not in MODEL_VARIANTS:
        raise ValueError(f"benchmark {name!r}: models must be one of {MODEL_VARIANTS}, got {full['models']!r}")
    if full["chat_template"] is None:  # chat models get chat prompts
        full["chat_template"] = full["models"] == "tuned"
    if not isinstance(full["chat_template"], bool):
        raise ValueError(f"benchmark {name!r}: chat_template must be true, false or null, got {full['chat_template']!r}")
    return full


def task_name(entry: dict) -> str:
    """The lm-eval task a benchmark runs: the derived `<task>__local` when it has local data."""
    return entry["task"] + LOCAL_SUFFIX if entry.get("data") else entry["task"]


def needs_code_execution(entry: dict, task_config: dict | None = None) -> bool:
    return entry["task"] in CODE_EXECUTION_TASKS or bool((task_config or {}).get("unsafe_code"))


def check_code_execution(name: str, entry: dict, task_config: dict | None = None) -> None:
    """Refuse (before any decoding) a code-executing benchmark without the explicit opt-in."""
    if needs_code_execution(entry, task_config) and not entry.get("allow_code_execution"):
        raise CodeExecutionNotAllowed(
            f"benchmark {name!r} (task {entry['task']!r}) scores by executing model-written code; "
            f"set allow_code_execution: true for it in the config to opt in (programs run in "
            f"fsgen.sandbox with a timeout and resource limits)"
        )


# ---------------------------------------------------------------- finding task YAMLs


def _task_yaml_in(root: Path, name: str) -> Path | None:
    """The YAML under `root` that defines task `name` (a quick text scan, then a YAML parse)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    for path in sorted(root.rglob("*.yaml")):
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if name not in text:
            continue
        try:
            cfg = load_yaml(path, resolve_func=False, recursive=False)
        except Exception:  # noqa: BLE001 - unrelated broken YAMLs are not our concern
            continue
        if cfg.get("task") == name:
            return path
    return None


def find_task_yaml(name: str, tasks_dir: Path | None = None) -> Path:
    """Where task `name` is defined: our tasks folder first, then lm-eval's built-in tasks."""
    import lm_eval.tasks

    for root in (Path(tasks_dir or TASKS_DIR), Path(lm_eval.tasks.__file__).parent):
        if root.is_dir() and (found := _task_yaml_in(root, name)):
            return found
    raise TaskNotFound(
        f"lm-eval task {name!r} not found in {tasks_dir or TASKS_DIR} nor in lm-eval's tasks "
        f"(a data override needs a single task, not a group or tag)"
    )


# ---------------------------------------------------------------- overrides


def dataset_override(data: dict, name: str = "?") -> dict:
    """YAML keys that make a task read `data` (a local file or a `save_to_disk` folder)."""
    if "path" not in data:
        raise ValueError(f"benchmark {name!r}: data override needs 'path'")
    split = data.get("split", "test")
    files = {split: data["path"]}
    if data.get("fewshot_path"):
        files[data.get("fewshot_split", "train")] = data["fewshot_path"]
    builders, data_files = set(), {}
    for key, path in files.items():
        path = Path(path).expanduser().resolve()
        if not path.exists():
            raise FileNotFoundError(f"benchmark {name!r}: data file {path} does not exist")
        if path.is_dir():  # datasets.save_to_disk folder: a Dataset or a DatasetDict
            folder = path / key if (path / "dataset_dict.json").exists() else path
            arrows = sorted(folder.glob("*.arrow"))
            if not arrows:
                raise FileNotFoundError(f"benchmark {name!r}: no .arrow files in {folder} (save_to_disk folder?)")
            builders.add("arrow")
            data_files[key] = [str(p) for p in arrows]
        else:
            builder = DATA_FORMATS.get(path.suffix.lower())
            if builder is None:
                raise ValueError(f"benchmark {name!r}: unknown data format {path.suffix!r} of {path}; "
                                 f"expected {', '.join(DATA_FORMATS)} or a save_to_disk folder")
            builders.add(builder)
            data_files[key] = str(path)
    if len(builders) != 1:
        raise ValueError(f"benchmark {name!r}: test and few-shot data must have one format, got {builders}")
    override = {
        "dataset_path": builders.pop(),
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
        "test_split": split,
        "validation_split": None,
    }
    # few-shot examples come from the local few-shot file, or from nowhere (never the test docs)
    fewshot_split = data.get("fewshot_split", "train") if data.get("fewshot_path") else None
    override["fewshot_split"] = override["training_split"] = fewshot_split
    return override


def check_fewshot_source(name: str, entry: dict, base_cfg: dict) -> None:
    """A task that draws few-shot examples from a dataset split needs that split locally too.

    Without it lm-eval would quietly draw the examples from the test documents.
    """
    shots = entry["num_fewshot"] if entry["num_fewshot"] is not None else base_cfg.get("num_fewshot") or 0
    inline = (base_cfg.get("fewshot_config") or {}).get("samples") is not None
    if shots > 0 and not inline and not entry["data"].get("fewshot_path"):
        split = base_cfg.get("fewshot_split") or base_cfg.get("training_split") or base_cfg.get("validation_split")
        raise ValueError(
            f"benchmark {name!r}: task {entry['task']!r} draws {shots} few-shot examples from its "
            f"{split!r} split; give data.fewshot_path (a local copy of that split) or num_fewshot: 0"
        )


def write_task_overrides(benchmarks: dict, out_dir, tasks_dir=None) -> str:
    """Write a derived task YAML for each benchmark with local data; return the include path.

    `benchmarks` maps benchmark name -> entry. The folder is written afresh each time (a
    benchmark that lost its override must not keep a stale YAML).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, raw in benchmarks.items():
        entry = benchmark_entry(name, raw)
        target = out_dir / f"{task_name(entry)}.yaml"
        if not entry["data"]:
            continue
        base = find_task_yaml(entry["task"], tasks_dir)
        from lm_eval.tasks._yaml_loader import load_yaml

        check_fewshot_source(name, entry, load_yaml(base, resolve_func=False, recursive=True))
        derived = {
            "include": str(base),
            "task": task_name(entry),
            "tag": [],  # the derived task joins no group of the original
            **dataset_override(entry["data"], name),
        }
        atomic.write_text(
            target,
            f"# fsgen data override of {entry['task']!r} for benchmark {name!r} (generated)\n"
            + yaml.safe_dump(derived, sort_keys=False),
        )
    return str(out_dir)


def make_task_manager(benchmarks: dict, override_dir, tasks_dir=None, include_defaults: bool | None = None,
                      write: bool = True):
    """A TaskManager that sees our tasks and the overrides; every benchmark's task must be found.

    `write=False` uses override YAMLs already in `override_dir` (the workflow's task_overrides
    rule writes them once for all jobs).

    lm-eval's built-in index takes ~20 s to build; it is skipped when no benchmark needs a
    built-in task directly (an override `include:`s its base by absolute path).
    """
    from lm_eval.tasks import TaskManager

    tasks_dir = Path(tasks_dir or TASKS_DIR)
    include_path = write_task_overrides(benchmarks, override_dir, tasks_dir) if write else str(override_dir)
    paths = [str(p) for p in (tasks_dir, include_path) if Path(p).is_dir()]
    names = {name: task_name(benchmark_entry(name, e)) for name, e in benchmarks.items()}
    if include_defaults is None:
        ours = {n for n in names.values()
                if any(_task_yaml_in(Path(p), n) for p in paths)}
        include_defaults = bool(set(names.values()) - ours)
    manager = TaskManager(include_path=paths, include_defaults=include_defaults)
    for name, task in names.items():
        if task not in manager.all_tasks:  # a wrong include path fails silently in lm-eval
            raise TaskNotFound(f"benchmark {name!r}: lm-eval task {task!r} not found (searched {paths}"
                               f"{' and lm-eval built-ins' if include_defaults else ''})")
    return manager


def select_samples(n_docs: int, limit: int | None, seed: int) -> list[int] | None:
    """Sorted doc indices: `limit` of `n_docs` drawn with `seed` (None: all documents).

    Sorted because lm-eval's evaluator maps its i-th selected doc to `samples[i]` while
    iterating docs in dataset order.
    """
    if limit is None or limit >= n_docs:
        return None
    return sorted(random.Random(seed).sample(range(n_docs), int(limit)))


def load_task(manager, task: str):
    """The lm-eval Task object of a single task name."""
    loaded = manager.load([task])
    tasks = loaded["tasks"]
    if task not in tasks:
        raise TaskNotFound(f"{task!r} is a group or tag ({sorted(tasks)}); fsgen benchmarks need a single task")
    return tasks[task]
