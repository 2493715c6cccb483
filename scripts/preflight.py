"""Rule preflight_benchmark (CPU, before a benchmark's decode jobs): fsgen.pipeline.preflight.

The config is the whole checked config of this run (`snakemake.config`), read, not tracked as a
param: a config edit must not rerun preflight (a rerunning setup job hides the params changes of
the decode jobs below it for that invocation; rules/models.smk). What the config names is checked
for one benchmark (wildcard): its task and data, the models of its jobs, the routers; learned
router files are also checked when the DAG is built (fsgen.pipeline.checks).

On success writes output[0] (JSON stamp: what was checked, with each model's fingerprint);
otherwise fails listing every problem, one line each naming the config key and model/task, and
the benchmark's decode jobs do not start.

params: include_path (the benchmark's derived task YAMLs); wildcards: benchmark; log[0].
"""

import logging
import sys

from fsgen.pipeline.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake

log_to(snakemake.log[0], fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
log = logging.getLogger("preflight")

from fsgen import atomic  # noqa: E402
from fsgen.fingerprint import model_fingerprint  # noqa: E402
from fsgen.pipeline.preflight import preflight, used_models, used_pairs  # noqa: E402

benchmark = snakemake.wildcards.benchmark
whole = dict(snakemake.config)
problems = preflight(whole, include_path=getattr(snakemake.params, "include_path", None), benchmark=benchmark)
if problems:
    for problem in problems:
        log.error(problem)
    message = f"preflight found {len(problems)} problem(s); nothing was decoded:\n" + "\n".join(problems)
    print(message, file=sys.stderr)
    sys.exit(1)

config = {**whole, "benchmarks": {benchmark: whole["benchmarks"][benchmark]}}
models = config["models"]
checked = [n for n in used_models(config) if not models[n].get("train")]
stamp = {
    "ok": True,
    "benchmark": benchmark,
    "models": {n: {"path": models[n]["path"], "fingerprint": model_fingerprint(str(models[n]["path"]))}
               for n in checked},
    "trained_models_checked_by_their_jobs": sorted(n for n in used_models(config) if models[n].get("train")),
    "pairs": [list(p) for p in used_pairs(config)],
}
atomic.write_json(snakemake.output[0], stamp)
log.info("preflight passed for %s: %d models, %d pairs", benchmark, len(checked), len(stamp["pairs"]))
