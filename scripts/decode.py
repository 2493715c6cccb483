"""Rules decode_pair / decode_single: decode one benchmark with lm-eval's `fsgen` model.

input: models, preflight, overrides, code (dependencies only)
output: trace (trace.parquet), samples (samples.jsonl), generations (generations.jsonl), all in
    one folder (decode_results.json, lm-eval's config of the run, is written next to them)
params: models (role -> {"name", "path", "dtype", "params"}; roles large, small, small_tuned),
    decode (method and its parameters: DecodeConfig fields), benchmark (harness entry, see
    fsgen.harness.tasks), include_path (folder of the task override YAMLs), optional resume_dir
    (fsgen.resume cache folder, outside the outputs: Snakemake deletes those of a failed job)
resources: batch_size (overrides the benchmark's; halved on retries)
threads: torch CPU threads; log[0]: the log file
"""

import logging
from pathlib import Path

import torch

from fsgen.harness.lm import DECODE_FIELDS
from fsgen.harness.run import run_decode
from fsgen.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake
log_to(snakemake.log[0])
torch.set_num_threads(max(1, int(snakemake.threads)))

models = dict(snakemake.params.models)
decode = dict(snakemake.params.decode)
entry = dict(snakemake.params.benchmark)
entry["batch_size"] = int(getattr(snakemake.resources, "batch_size", entry.get("batch_size", 8)))
ignored = sorted(set(decode) - DECODE_FIELDS - {"method"})
if ignored:
    logging.warning("decode params %s are not DecodeConfig fields; ignored", ignored)

model_args = {role: spec["path"] for role, spec in models.items()}
model_args["dtype"] = (models.get("large") or next(iter(models.values()))).get("dtype", "float32")
model_args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
model_args["batch_size"] = entry["batch_size"]
if getattr(snakemake.params, "resume_dir", None):  # fsgen.resume cache: a killed job resumes
    model_args["resume_dir"] = str(snakemake.params.resume_dir)
model_args.update({k: v for k, v in decode.items() if k in DECODE_FIELDS or k == "method"})

out_dir = Path(snakemake.output.samples).parent
for name in ("trace", "generations"):
    if Path(getattr(snakemake.output, name)).parent != out_dir:
        raise ValueError(f"decode outputs must share one folder: {name} is not in {out_dir}")
logging.info("benchmark %s entry %s model_args %s", snakemake.wildcards.benchmark, entry, model_args)
run_decode(snakemake.wildcards.benchmark, entry, model_args, out_dir, include_path=snakemake.params.include_path)
logging.info("done: %s", out_dir)
