"""Rule counterfactual_score: score each counterfactual answer with the task's own metric (lm-eval replay).

input: continuations (counterfactual_continuations.parquet), samples and generations (the
    oracle job's), metrics (its score job's metrics.json; scored_samples.jsonl beside it holds
    the per-document outcomes before), overrides, code (dependencies only)
output: counterfactual (counterfactual.parquet, fsgen.harness.counterfactual_score.OUTCOME_SCHEMA)
params: benchmark (harness entry, see fsgen.harness.tasks; code runs only with
    allow_code_execution: true), include_path (folder of the task override YAMLs)
log[0]: the log file
"""

import logging

from fsgen.harness.counterfactual_score import run_counterfactual_score
from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])

meta = run_counterfactual_score(
    snakemake.wildcards.benchmark, dict(snakemake.params.benchmark), snakemake.input.continuations,
    snakemake.input.samples, snakemake.input.generations, snakemake.input.metrics, snakemake.output.counterfactual,
    include_path=snakemake.params.include_path,
)
logging.info("done: %s (%s, %d critical)", snakemake.output.counterfactual, meta["status"], meta["critical"])
