"""Rule task_overrides: derived lm-eval task YAMLs for benchmarks with local data.

input: the local data files (any); output[0]: results/tasks/overrides.json (manifest; the YAMLs
are written next to it, so its folder is the include_path of decode/score jobs);
params: benchmarks (name -> harness entry), tasks_dir (fsgen/harness/lm_eval_tasks); log[0].
"""

import json
import logging
from pathlib import Path

from fsgen import atomic
from fsgen.harness.tasks import task_name, write_task_overrides
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])

out = Path(snakemake.output[0])
include_path = write_task_overrides(snakemake.params.benchmarks, out.parent, tasks_dir=snakemake.params.tasks_dir)
manifest = {b: task_name(e) for b, e in snakemake.params.benchmarks.items()}
logging.info("include_path %s; tasks %s", include_path, manifest)
atomic.write_text(out, json.dumps({"include_path": include_path, "tasks": manifest}, indent=2) + "\n")
