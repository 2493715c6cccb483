"""Rule counterfactual: continue a sample of an oracle job's interventions with System 1's token.

input: trace, generations (the oracle job's), metrics (its score job's metrics.json: a task
    without an accuracy metric is skipped), models, code (dependencies only)
output: continuations (counterfactual_continuations.parquet, fsgen.harness.counterfactual)
params: models (role -> {"name", "path", "dtype", "params", optional "gpus"}: the oracle job's),
    decode (the variant's DecodeConfig settings), counterfactual ({"positions", "seed"}: the
    config's counterfactual section), resume_dir (fsgen.resume cache folder of these jobs)
wildcards: benchmark, variant, large, small (the oracle job), part of the resume key
resources: batch_size (the cap: halved on retries); threads: torch CPU threads; log[0]: the log

Models are loaded (placed over the job's GPUs, as decode does) only when there is something
to continue. The job's resume cache folders are removed once the output is written.
"""

import logging

import torch

from fsgen.decoding.engine import load_job_systems
from fsgen.decoding.placement import DEFAULT_PROMPT_TOKENS
from fsgen.harness.counterfactual import read_jsonl, run_counterfactual_decode
from fsgen.pipeline.rulescript import log_to
from fsgen.resume import remove_job_caches

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
torch.set_num_threads(max(1, int(snakemake.threads)))

models = dict(snakemake.params.models)
settings = dict(snakemake.params.decode)
counterfactual = dict(snakemake.params.counterfactual)
job = {"stage": "counterfactual", **{name: str(getattr(snakemake.wildcards, name))
                                     for name in ("benchmark", "variant", "large", "small")}}


def load():
    budget = max((int(g["max_new_tokens"]) for g in read_jsonl(snakemake.input.generations)), default=1)
    return load_job_systems(
        settings["method"],
        dtype=(models.get("large") or next(iter(models.values()))).get("dtype", "float32"),
        batch_size=int(snakemake.resources.batch_size), max_new_tokens=budget, prompt_tokens=DEFAULT_PROMPT_TOKENS,
        gpus={role: spec.get("gpus") for role, spec in models.items()},
        **{role: spec["path"] for role, spec in models.items()},
    )


resume_dir = str(snakemake.params.resume_dir)
meta = run_counterfactual_decode(
    snakemake.input.trace, snakemake.input.generations, snakemake.input.metrics, snakemake.output.continuations,
    settings=settings, positions=int(counterfactual["positions"]), seed=int(counterfactual["seed"]), load=load,
    cache_dir=resume_dir, job=job,
)
for folder in remove_job_caches(resume_dir, job):  # the output now holds every continuation
    logging.info("removed the resume cache %s of the finished job", folder)
logging.info("done: %s (%s)", snakemake.output.continuations, meta["status"])
