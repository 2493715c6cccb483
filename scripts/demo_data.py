"""Snakemake script: the demo benchmark's splits (fsgen.demo.arith.write_splits).

input:   (none)
output:  three paths, in this order: <dir>/train.jsonl, <dir>/test.jsonl, <dir>/tuned_train.jsonl
params:  demo = {"n_train", "n_test", "n_tuned", "seed"} (config["demo"]; missing keys take the
         write_splits defaults; other keys are ignored)
log:     one file
"""

import logging
from pathlib import Path

from fsgen.demo.arith import write_splits
from fsgen.pipeline.rulescript import log_to

log_to(snakemake.log[0])  # noqa: F821
outputs = [Path(p) for p in snakemake.output]  # noqa: F821
out_dir = outputs[0].parent
expected = [out_dir / f"{split}.jsonl" for split in ("train", "test", "tuned_train")]
if outputs != expected:
    raise ValueError(f"demo_data outputs must be {[str(p) for p in expected]}, got {[str(p) for p in outputs]}")
demo = dict(snakemake.params.demo)  # noqa: F821
kwargs = {k: int(demo[k]) for k in ("n_train", "n_test", "n_tuned", "seed") if k in demo}
paths = write_splits(out_dir, **kwargs)
logging.info("wrote %s with %s", {k: str(v) for k, v in paths.items()}, kwargs)
