"""Rule report: Snakemake's HTML report of the finished stage targets, written atomically.

input: every analysis output and stats.json (dependencies only); output[0]: results/report.html;
params: config (the run's effective config), snakefile, targets (rules whose outputs the report
covers; not `all`, which would include this rule's own output); log[0].
"""

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake

out = Path(snakemake.output[0])
tmp = out.with_name(f".{out.stem}.tmp-{os.getpid()}.html")
with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
    yaml.safe_dump(dict(snakemake.params.config), f, sort_keys=False)
# --nolock: the running workflow holds the working directory's lock; the report only reads
# (targets first: --configfile takes every argument after it)
cmd = [sys.executable, "-m", "snakemake", *snakemake.params.targets, "--nolock", "--report", str(tmp),
       "--snakefile", snakemake.params.snakefile, "--configfile", f.name]
try:
    with open(snakemake.log[0], "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT)
finally:
    os.unlink(f.name)
if done.returncode != 0 or not tmp.exists():
    tmp.unlink(missing_ok=True)
    sys.exit(f"snakemake --report failed (exit {done.returncode}); see {snakemake.log[0]}")
os.replace(tmp, out)
