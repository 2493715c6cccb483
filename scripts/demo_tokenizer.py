"""Snakemake script: the demo family's shared tokenizer (fsgen.demo.train.train_tokenizer).

input:   train = the train split (JSONL)
output:  <dir>/tokenizer.json (the whole Hugging Face tokenizer folder <dir> is written)
params:  demo = config["demo"]; an optional "vocab_size" key (default 200)
log:     one file
"""

import logging
from pathlib import Path

from fsgen.demo.arith import read_jsonl
from fsgen.demo.tokenizer import train_tokenizer
from fsgen.pipeline.rulescript import log_to

log_to(snakemake.log[0])  # noqa: F821
out_dir = Path(snakemake.output[0]).parent  # noqa: F821
demo = dict(getattr(snakemake.params, "demo", {}) or {})  # noqa: F821
kwargs = {"vocab_size": int(demo["vocab_size"])} if "vocab_size" in demo else {}
tok = train_tokenizer(read_jsonl(snakemake.input.train), out_dir, **kwargs)  # noqa: F821
logging.info("tokenizer with %d tokens -> %s", len(tok), out_dir)
