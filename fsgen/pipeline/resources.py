"""Cluster resources of the jobs: GPUs from the models a job loads, growth on retries.

Memory and runtime grow with the attempt number (a retry after an out-of-memory kill or a
timeout asks for more); the batch size halves instead, which changes no result (a row does not
depend on its batch).
"""

from __future__ import annotations

import math

from fsgen.decoding.config import DEFAULTS
from fsgen.pipeline.jobs import job_models


def model_gpus(config: dict, name: str) -> int:
    return int(config["models"][name].get("gpus", 0))


def job_gpus(config: dict, job: dict) -> int:
    """GPUs of a decode job: every model it loads, summed (`resources.pair_gpus: sum`, default:
    each model keeps its own memory) or their max (`max`: the models share the large model's GPUs)."""
    counts = [model_gpus(config, name) for name in job_models(config, job).values()]
    how = config.get("resources", {}).get("pair_gpus", "sum")
    return max(counts) if how == "max" else sum(counts)


def grown(base: float, attempt: int, factor: float) -> int:
    """A resource that grows with the attempt number (retries after OOM / timeout)."""
    return int(math.ceil(base * factor ** (attempt - 1)))


def attempt_batch_size(batch_size: int | None, attempt: int) -> int:
    """Batch size for an attempt (None: the engine's default): halved on each retry."""
    return max(1, int(DEFAULTS.batch_size if batch_size is None else batch_size) >> (attempt - 1))
