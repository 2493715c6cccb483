"""Rule preflight (CPU, before every decode job): fsgen.pipeline.preflight over the whole config.

On success writes output[0] (JSON stamp: what was checked, with each model's fingerprint);
otherwise fails listing every problem, one line each naming the config key and model/task, and
nothing is decoded (every decode rule takes the stamp as input).

params: config (the whole checked config, as the Snakefile has it), include_path (derived task
YAMLs); log[0].
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

config = dict(snakemake.params.config)
problems = preflight(config, include_path=getattr(snakemake.params, "include_path", None))
if problems:
    for problem in problems:
        log.error(problem)
    message = f"preflight found {len(problems)} problem(s); nothing was decoded:\n" + "\n".join(problems)
    print(message, file=sys.stderr)
    sys.exit(1)

models = config["models"]
used = used_models(config)
stamp = {
    "ok": True,
    "models": {n: {"path": models[n]["path"], "fingerprint": model_fingerprint(str(models[n]["path"]))} for n in used},
    "pairs": [list(p) for p in used_pairs(config)],
    "benchmarks": sorted(config["benchmarks"]),
}
atomic.write_json(snakemake.output[0], stamp)
log.info("preflight passed: %d models, %d pairs, %d benchmarks", len(used), len(stamp["pairs"]), len(stamp["benchmarks"]))
