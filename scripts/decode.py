"""Rules decode_pair / decode_single: decode one benchmark with lm-eval's `fsgen` model.

input: models, preflight, overrides, code (dependencies only)
output: trace (trace.parquet), samples (samples.jsonl), generations (generations.jsonl), all in
    one folder (decode_results.json, lm-eval's config of the run, is written next to them)
params: models (role -> {"name", "path", "dtype", "params", optional "gpus": GPUs of its own};
    the roles of the method),
    decode (the variant's DecodeConfig settings, fsgen.pipeline.jobs.decode_settings),
    benchmark (harness entry, see fsgen.harness.tasks), include_path (folder of the task override
    YAMLs), resume_dir (fsgen.resume cache folder, outside the outputs: Snakemake deletes those
    of a failed job), optional placement ({"prompt_tokens": the longest prompt to plan memory
    for}; default fsgen.decoding.placement.DEFAULT_PROMPT_TOKENS)
wildcards: benchmark, variant, large, small (decode_pair) or benchmark, model (decode_single):
    the job's identity, part of its resume key and recorded in the cache folder's key.json
resources: batch_size (the cap: halved on retries; a row's result does not depend on it)
threads: torch CPU threads; log[0]: the log file

With CUDA every model is placed over exactly the job's visible GPUs by the placement planner
(fsgen.decoding.engine.load_job_systems; the plan goes to the log) and the batch size is
min(the plan's, resources.batch_size). Without CUDA the models run on the CPU.

The resume cache serves attempts that did not finish (killed, timed out, out of memory). Once the
outputs are written the job's cache folders are removed: any later run of this job (forced,
or rerun for changed code, params or inputs) decodes afresh.
"""

import logging
from dataclasses import replace
from pathlib import Path

import torch

from fsgen.decoding import DecodeConfig
from fsgen.decoding.engine import load_job_systems
from fsgen.decoding.placement import DEFAULT_PROMPT_TOKENS
from fsgen.harness.lm import FsgenLM
from fsgen.harness.run import run_decode
from fsgen.harness.tasks import benchmark_entry
from fsgen.pipeline.rulescript import log_to
from fsgen.resume import remove_job_caches

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
torch.set_num_threads(max(1, int(snakemake.threads)))

models = dict(snakemake.params.models)
benchmark = snakemake.wildcards.benchmark
entry = dict(snakemake.params.benchmark)
config = DecodeConfig.from_settings(dict(snakemake.params.decode), batch_size=int(snakemake.resources.batch_size))
placement = dict(getattr(snakemake.params, "placement", None) or {})

out_dir = Path(snakemake.output.samples).parent
for name in ("trace", "generations"):
    if Path(getattr(snakemake.output, name)).parent != out_dir:
        raise ValueError(f"decode outputs must share one folder: {name} is not in {out_dir}")
systems, batch_size = load_job_systems(
    config.method,
    dtype=(models.get("large") or next(iter(models.values()))).get("dtype", "float32"),
    batch_size=config.batch_size,
    max_new_tokens=int(benchmark_entry(benchmark, entry)["max_new_tokens"]),
    prompt_tokens=int(placement.get("prompt_tokens") or DEFAULT_PROMPT_TOKENS),
    gpus={role: spec.get("gpus") for role, spec in models.items()},
    **{role: spec["path"] for role, spec in models.items()},
)
config = replace(config, batch_size=batch_size)
entry["batch_size"] = batch_size
logging.info("benchmark %s entry %s models %s decode %s", benchmark, entry, models, config)
resume_dir = getattr(snakemake.params, "resume_dir", None)  # the rules always give one
job = {name: str(getattr(snakemake.wildcards, name))
       for name in ("benchmark", "variant", "large", "small", "model") if hasattr(snakemake.wildcards, name)}
lm = FsgenLM(systems=systems, config=config, resume_dir=str(resume_dir) if resume_dir else None, job=job)
run_decode(benchmark, entry, None, out_dir, lm=lm, include_path=snakemake.params.include_path)
if resume_dir:
    for folder in remove_job_caches(resume_dir, job):  # the outputs now hold every request
        logging.info("removed the resume cache %s of the finished job", folder)
logging.info("done: %s", out_dir)
