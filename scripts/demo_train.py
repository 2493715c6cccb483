"""Snakemake script: train one demo family member (one model per job, so two train at once).

input:   train = train split (JSONL); tuned_train = tuned-style split (JSONL);
         tokenizer = <tokenizer dir>/tokenizer.json;
         base = the base model's fsgen_model.json for a tuned variant (a list: empty for base models)
output:  results/models/<name>/fsgen_model.json (the whole model folder <name>/ is written)
params:  spec = {"name": <model name>, "base": <base model name or None>, "seed": <int>};
         the architecture and steps come from fsgen.demo.family (DEFAULT_FAMILY / DEFAULT_TUNED)
threads: torch threads (1 recommended: deterministic and two jobs share 2 cores)
log:     one file (loss every 100 steps; the tqdm bar goes to stderr)
"""

import json
import logging
from pathlib import Path

from fsgen.demo.family import train_member
from fsgen.pipeline.rulescript import log_to

log_to(snakemake.log[0])  # noqa: F821
spec = dict(snakemake.params.spec)  # noqa: F821
out_dir = Path(snakemake.output[0]).parent  # noqa: F821
base_inputs = list(snakemake.input.base) if "base" in snakemake.input.keys() else []  # noqa: F821
if spec.get("base") and not base_inputs:
    raise ValueError(f"{spec['name']} is a tuned variant of {spec['base']} but input.base is empty")
base_dir = Path(base_inputs[0]).parent if base_inputs else None
sidecar = train_member(
    spec["name"],
    snakemake.input.train,  # noqa: F821
    snakemake.input.tuned_train,  # noqa: F821
    Path(snakemake.input.tokenizer).parent,  # noqa: F821
    out_dir,
    base_dir=base_dir,
    seed=int(spec.get("seed", 0)),
    threads=snakemake.threads,  # noqa: F821
)
logging.info("trained %s: %s", spec["name"], json.dumps(sidecar))
