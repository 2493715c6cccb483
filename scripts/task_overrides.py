"""Rule task_overrides: the derived lm-eval task YAML of one benchmark with local data.

input: the benchmark's local data files; output[0]: results/tasks/<benchmark>/overrides.json
(manifest; the YAML is written next to it, so its folder is the benchmark's include_path for
its decode and score jobs); params: benchmark ({task, data}: what the derived task depends on),
tasks_dir (fsgen/harness/lm_eval_tasks); wildcards: benchmark; log[0].
"""

import logging
from pathlib import Path

from fsgen import atomic
from fsgen.harness.tasks import task_name, write_task_overrides
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])

out = Path(snakemake.output[0])
benchmarks = {snakemake.wildcards.benchmark: dict(snakemake.params.benchmark)}
include_path = write_task_overrides(benchmarks, out.parent, tasks_dir=snakemake.params.tasks_dir)
manifest = {b: task_name(e) for b, e in benchmarks.items()}
logging.info("include_path %s; tasks %s", include_path, manifest)
atomic.write_json(out, {"include_path": include_path, "tasks": manifest})
