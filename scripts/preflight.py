"""Rule preflight (CPU, before every decode job): fsgen.preflight over the whole config.

On success writes output[0] (JSON stamp: what was checked, with each model's fingerprint);
otherwise fails listing every problem, one line each naming the config key and model/task, and
nothing is decoded (every decode rule takes the stamp as input).

params: models (name -> {path, ...}), pairs ([[large, small], ...]), tuned (name -> tuned variant
or None), benchmarks (name -> harness entry), include_path (derived task YAMLs), and optionally
methods (name -> {method, router/routers, ...}: tells whether proxy tuning needs tuned models);
log[0].
"""

import json
import logging
import sys

from fsgen.rulescript import log_to

snakemake = globals()["snakemake"]  # noqa: F821 - injected by Snakemake

log_to(snakemake.log[0], fmt="%(asctime)s %(levelname)s %(name)s %(message)s")
log = logging.getLogger("preflight")

from fsgen.preflight import preflight  # noqa: E402
from fsgen.resume import model_fingerprint  # noqa: E402
from fsgen import atomic  # noqa: E402

params = snakemake.params
tuned = dict(getattr(params, "tuned", None) or {})
models = {name: {**dict(entry), "tuned": tuned.get(name, dict(entry).get("tuned"))}
          for name, entry in dict(params.models).items()}
config = {
    "models": models,
    "pairs": [list(p) for p in params.pairs],
    "benchmarks": {name: dict(entry) for name, entry in dict(params.benchmarks).items()},
}
if getattr(params, "methods", None) is not None:
    config["methods"] = {name: dict(spec) for name, spec in dict(params.methods).items()}

problems = preflight(config, include_path=getattr(params, "include_path", None))
if problems:
    for problem in problems:
        log.error(problem)
    message = f"preflight found {len(problems)} problem(s); nothing was decoded:\n" + "\n".join(problems)
    print(message, file=sys.stderr)
    sys.exit(1)

used = sorted({n for pair in config["pairs"] for n in pair} | {m["tuned"] for n, m in models.items()
                                                              if m.get("tuned") and m["tuned"] in models})
stamp = {
    "ok": True,
    "models": {n: {"path": models[n]["path"], "fingerprint": model_fingerprint(str(models[n]["path"]))} for n in used},
    "pairs": config["pairs"],
    "benchmarks": sorted(config["benchmarks"]),
}
atomic.write_text(snakemake.output[0], json.dumps(stamp, indent=2) + "\n")
log.info("preflight passed: %d models, %d pairs, %d benchmarks", len(used), len(config["pairs"]), len(stamp["benchmarks"]))
