"""Rule fetch (localrule; run it where there is internet, e.g. a login node): download every hub
model and every benchmark dataset the config needs into the cache (HF_HOME = config cache_dir),
so that decode/score jobs can run offline (HF_HUB_OFFLINE=1, HF_DATASETS_OFFLINE=1).

output[0]: <cache_dir>/fsgen_fetch.json (what was fetched, where); params: models (name -> hub id,
only models that are neither trained here nor local folders), benchmarks (name -> harness entry),
tasks_dir, cache_dir; log[0].
"""

import json
import logging
import os

from fsgen import atomic
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake

# The workflow sets the offline flags for every job; this job is the one that goes online. The
# flags are read when huggingface_hub / datasets are imported, so clear them before.
for flag in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.pop(flag, None)
os.environ["HF_HOME"] = os.path.abspath(snakemake.params.cache_dir)

log_to(snakemake.log[0])
log = logging.getLogger("fetch")

# weights, configs, tokenizer files; no other formats (e.g. GGUF, .bin duplicates of safetensors)
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.py", "tokenizer*"]


def fetch_model(name: str, repo_id: str) -> str:
    from huggingface_hub import snapshot_download

    log.info("model %s: %s", name, repo_id)
    try:
        return snapshot_download(repo_id, allow_patterns=MODEL_FILES)
    except Exception as err:  # noqa: BLE001 - re-raised with the model named
        raise RuntimeError(f"fetch: could not download model {name!r} ({repo_id}): {err}") from err


def fetch_dataset(name: str, task: str, tasks_dir: str) -> None:
    """Instantiating the lm-eval task downloads its dataset (test, few-shot splits) into the cache."""
    from lm_eval.tasks import TaskManager, get_task_dict

    log.info("benchmark %s: task %s", name, task)
    try:
        get_task_dict([task], TaskManager(include_path=tasks_dir))
    except Exception as err:  # noqa: BLE001
        raise RuntimeError(f"fetch: could not load the dataset of benchmark {name!r} (task {task!r}): {err}") from err


manifest = {"cache_dir": os.environ["HF_HOME"], "models": {}, "datasets": {}}
for name, repo_id in snakemake.params.models.items():
    manifest["models"][name] = {"repo_id": repo_id, "snapshot": fetch_model(name, repo_id)}
for name, entry in snakemake.params.benchmarks.items():
    if entry.get("data"):  # a local copy replaces the hub dataset: nothing to fetch
        log.info("benchmark %s: local data %s", name, entry["data"]["path"])
        continue
    fetch_dataset(name, entry["task"], snakemake.params.tasks_dir)
    manifest["datasets"][name] = entry["task"]

atomic.write_text(snakemake.output[0], json.dumps(manifest, indent=2) + "\n")
log.info("wrote %s", snakemake.output[0])
