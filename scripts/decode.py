"""Rules decode_pair / decode_single: decode one benchmark with lm-eval's `fsgen` model.

input: models, preflight, overrides, code (dependencies only)
output: trace (trace.parquet), samples (samples.jsonl), generations (generations.jsonl), all in
    one folder (decode_results.json, lm-eval's config of the run, is written next to them)
params: models (role -> {"name", "path", "dtype", "params"}; the roles of the method),
    decode (the variant's DecodeConfig settings, fsgen.pipeline.jobs.decode_settings),
    benchmark (harness entry, see fsgen.harness.tasks), include_path (folder of the task override
    YAMLs), resume_dir (fsgen.resume cache folder, outside the outputs: Snakemake deletes those
    of a failed job)
wildcards: benchmark, variant, large, small (decode_pair) or benchmark, model (decode_single):
    the job's identity, part of its resume key and recorded in the cache folder's key.json
resources: batch_size (halved on retries; a row's result does not depend on it)
threads: torch CPU threads; log[0]: the log file

The resume cache serves attempts that did not finish (killed, timed out, out of memory). Once the
outputs are written the job's cache folders are removed: any later run of this job (forced,
or rerun for changed code, params or inputs) decodes afresh.
"""

import logging
from pathlib import Path

import torch

from fsgen.decoding import DecodeConfig, load_systems
from fsgen.harness.lm import FsgenLM
from fsgen.harness.run import run_decode
from fsgen.pipeline.rulescript import log_to
from fsgen.resume import remove_job_caches

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
torch.set_num_threads(max(1, int(snakemake.threads)))

models = dict(snakemake.params.models)
entry = dict(snakemake.params.benchmark)
entry["batch_size"] = int(snakemake.resources.batch_size)
config = DecodeConfig.from_settings(dict(snakemake.params.decode), batch_size=entry["batch_size"])

out_dir = Path(snakemake.output.samples).parent
for name in ("trace", "generations"):
    if Path(getattr(snakemake.output, name)).parent != out_dir:
        raise ValueError(f"decode outputs must share one folder: {name} is not in {out_dir}")
logging.info("benchmark %s entry %s models %s decode %s", snakemake.wildcards.benchmark, entry, models, config)
systems = load_systems(
    config.method,
    dtype=(models.get("large") or next(iter(models.values()))).get("dtype", "float32"),
    device="cuda" if torch.cuda.is_available() else "cpu",
    **{role: spec["path"] for role, spec in models.items()},
)
resume_dir = getattr(snakemake.params, "resume_dir", None)  # the rules always give one
job = {name: str(getattr(snakemake.wildcards, name))
       for name in ("benchmark", "variant", "large", "small", "model") if hasattr(snakemake.wildcards, name)}
lm = FsgenLM(systems=systems, config=config, resume_dir=str(resume_dir) if resume_dir else None, job=job)
run_decode(snakemake.wildcards.benchmark, entry, None, out_dir, lm=lm, include_path=snakemake.params.include_path)
if resume_dir:
    for folder in remove_job_caches(resume_dir, job):  # the outputs now hold every request
        logging.info("removed the resume cache %s of the finished job", folder)
logging.info("done: %s", out_dir)
