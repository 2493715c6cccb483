"""Rule score: re-score a decode run with lm-eval (the `fsgen-replay` model), no model loaded.

input: samples (the decode run's samples.jsonl), overrides, code (dependencies only)
output: metrics (metrics.json); lm_eval_results.json and scored_samples.jsonl are written next to it
params: benchmark (harness entry, see fsgen.harness.tasks; code runs only with
    allow_code_execution: true), include_path (folder of the task override YAMLs)
log[0]: the log file
"""

import logging
from pathlib import Path

from fsgen.harness.run import run_score
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])

out_dir = Path(snakemake.output.metrics).parent
if Path(snakemake.output.metrics).name != "metrics.json":
    raise ValueError(f"score output must be named metrics.json, got {snakemake.output.metrics}")
metrics = run_score(snakemake.wildcards.benchmark, dict(snakemake.params.benchmark), snakemake.input.samples, out_dir,
                    include_path=snakemake.params.include_path)
logging.info("metrics %s", metrics["metrics"])
