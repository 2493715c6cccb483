"""Local mirrors of the hub: run a config written with hub ids from local folders and files.

A user without internet on the machine that runs Snakemake (or a test) keeps the config as it is
(`config/paper.yaml` names `Qwen/Qwen1.5-0.5B`, lm-eval tasks with hub datasets) and redirects it:

    snakemake --configfile config/paper.yaml --config model_mirror=/models data_mirror=/data

- `model_mirror: DIR`: every model whose `path` is a hub id (not a local folder, not trained by the
  workflow) is read from `DIR/<hub id>` (`Qwen/Qwen1.5-0.5B` -> `DIR/Qwen/Qwen1.5-0.5B`), a folder
  as `save_pretrained` writes it. A hub id without its folder in the mirror is a `ConfigError`
  naming the model.
- `data_mirror: DIR`: every benchmark without its own `data` reads its test documents from
  `DIR/<benchmark>.jsonl` (or `.json`, `.parquet`, `.csv`, or a `save_to_disk` folder
  `DIR/<benchmark>/`), in the task's own format, through the same derived task as a `data:` entry;
  `DIR/<benchmark>.fewshot.<ext>` (when present) is its few-shot source. A benchmark without its
  file is a `ConfigError` naming it.

`apply_mirrors` rewrites the checked config in place (before the semantic checks), so that every
rule, preflight and the report see the local paths; it is idempotent (a rewritten path is local and
a benchmark with data is left alone), as the report re-reads the effective config.
"""

from __future__ import annotations

from pathlib import Path

from fsgen.fingerprint import looks_local
from fsgen.harness.tasks import DATA_FORMATS
from fsgen.pipeline.config import ConfigError

DATA_SUFFIXES = tuple(DATA_FORMATS)  # .json, .jsonl, .parquet, .csv: what a `data:` entry reads
FEWSHOT_INFIX = ".fewshot"


def is_hub_id(path: str) -> bool:
    """A hub id (`name` or `org/name`), not a filesystem path (`fsgen.fingerprint.looks_local`). An
    existing path is local, so a rewritten `DIR/name` stays as it is on a second pass."""
    return not looks_local(path)


def _mirror_dir(config: dict, key: str) -> Path | None:
    folder = config.get(key)
    if not folder:
        return None
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise ConfigError(f"{key}: folder {folder!r} does not exist (relative paths are from the working directory)")
    return path


def mirrored_model_paths(config: dict) -> dict[str, str]:
    """Model name -> its folder in `model_mirror`, for every model whose path is a hub id."""
    mirror = _mirror_dir(config, "model_mirror")
    if mirror is None:
        return {}
    out = {}
    for name, model in config.get("models", {}).items():
        hub_id = str(model["path"])
        if model.get("train") or not is_hub_id(hub_id):
            continue
        folder = mirror / hub_id
        if not folder.is_dir():
            raise ConfigError(f"models.{name}.path: hub id {hub_id!r} is not in model_mirror {str(mirror)!r} "
                              f"(no folder {str(folder)!r}; put the model there with save_pretrained or "
                              f"huggingface-cli download --local-dir)")
        out[name] = str(folder)
    return out


def _data_file(mirror: Path, stem: str) -> Path | None:
    for suffix in DATA_SUFFIXES:
        if (mirror / f"{stem}{suffix}").is_file():
            return mirror / f"{stem}{suffix}"
    return None


def mirrored_benchmark_data(config: dict) -> dict[str, dict]:
    """Benchmark name -> its `data` entry from `data_mirror`, for every benchmark without `data`."""
    mirror = _mirror_dir(config, "data_mirror")
    if mirror is None:
        return {}
    out = {}
    for name, bench in config.get("benchmarks", {}).items():
        if bench.get("data"):
            continue
        found = _data_file(mirror, name) or (mirror / name if (mirror / name).is_dir() else None)
        if found is None:
            raise ConfigError(f"benchmarks.{name}.data: data_mirror {str(mirror)!r} has no documents for this "
                              f"benchmark (expected {name}.jsonl, .json, .parquet or .csv in the task's own "
                              f"format, or a save_to_disk folder {name}/)")
        data = {"path": str(found), "split": "test"}
        fewshot = _data_file(mirror, name + FEWSHOT_INFIX)
        if fewshot is not None:
            data.update(fewshot_path=str(fewshot), fewshot_split="train")
        out[name] = data
    return out


def apply_mirrors(config: dict) -> dict:
    """Rewrite hub model paths and hub benchmark data to the configured mirrors (in place)."""
    for name, folder in mirrored_model_paths(config).items():
        config["models"][name]["path"] = folder
    for name, data in mirrored_benchmark_data(config).items():
        config["benchmarks"][name]["data"] = data
    return config
