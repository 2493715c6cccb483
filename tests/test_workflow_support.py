"""Helpers shared by the workflow tests (no tests here): a temporary copy of the repository,
stub rule scripts, running snakemake, reading which jobs a dry run would run."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SKIP = {".git", "results", ".snakemake", "resources", "__pycache__", ".pytest_cache", "bench", "logs", "build"}
RULE_SCRIPTS = ("decode", "score", "job_stats", "demo_data", "demo_tokenizer", "demo_train", "preflight",
                "task_overrides", "fetch", "aggregate", "scaling_law", "frontier", "critical", "proxy_gap",
                "figures", "summary", "viewer", "counterfactual", "counterfactual_score")

# A stand-in for every rule script: writes each output (and log) with the job's params, so that a
# params change changes the outputs, without any model or lm-eval run.
STUB = '''
import json
from pathlib import Path
sm = snakemake  # noqa: F821
record = {"rule": sm.rule, "params": {k: repr(v) for k, v in sm.params.items()}}
for path in list(sm.output) + list(sm.log):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record) + "\\n")
'''


def copy_repo(dest: Path, stub_scripts: bool | str = "missing") -> Path:
    """Copy the working tree (no results, caches, git) to dest. stub_scripts: "missing" stubs the
    rule scripts that do not exist yet; True stubs them all; False none."""
    def ignore(folder, names):
        return [n for n in names if n in SKIP or n.endswith(".egg-info")]

    shutil.copytree(REPO, dest, ignore=ignore)
    for name in RULE_SCRIPTS:
        script = dest / "scripts" / f"{name}.py"
        if stub_scripts is True or (stub_scripts == "missing" and not script.exists()):
            script.write_text(STUB)
    return dest  # nothing beside it: config/paper.yaml's reference is inside the project (config/reference/)


def snakemake(workdir: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=timeout)


def dry_run_jobs(output: str) -> dict[str, int]:
    """Rule -> job count from a dry run's "Job stats" table ({} when nothing to do)."""
    counts = {}
    if "Job stats:" not in output:
        return counts
    table = output.split("Job stats:", 1)[1]
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        counts[m.group(1)] = int(m.group(2))
    counts.pop("total", None)
    return counts


def dry_run_resources(output: str, rule: str) -> list[dict[str, str]]:
    """wildcards and resources of each job of a rule, from a (non-quiet) dry run's job list."""
    jobs = []
    for block in re.split(r"\n(?=\[[^\n]*\]\n(?:local)?rule )", output):
        if not re.search(rf"^(?:local)?rule {rule}:", block, re.M):
            continue
        job = {}
        for key in ("wildcards", "resources"):
            m = re.search(rf"^\s+{key}: (.*)$", block, re.M)
            if m:
                job[key] = dict(kv.split("=", 1) for kv in m.group(1).split(", ") if "=" in kv)
        jobs.append(job)
    return jobs


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def demo_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# ----------------------------------------------------------------------------- bad configs
# id -> (edit of the demo config: a function of the dict, or of the YAML text; text the error
# must contain, naming the key at fault)
def _set(path, value):
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return cfg
    return edit


def _explicit_pairs(cfg):
    cfg["pairs"] = [{"large": "arith-xs", "small": "arith-l"}]
    return cfg


def _duplicate_model(text: str) -> str:
    # a second `arith-s:` entry right after the first one's block
    return text.replace("  arith-m:\n", "  arith-s:\n    path: results/models/arith-s\n    params: 5.0e+5\n  arith-m:\n", 1)


def _typo_top_level(cfg):
    cfg["modles"] = cfg.pop("models")
    return cfg


def _tuned_missing(cfg):
    cfg["models"]["arith-xs"]["tuned"] = "arith-xs-chat"
    return cfg


BAD_CONFIGS = {
    "unknown_method": (_set(["methods", "oracle", "method"], "medusa"), "methods.oracle.method"),
    "unknown_router": (_set(["methods", "oracle", "router"], "random:0.3"), "methods.oracle.router: unknown router 'random'"),
    "malformed_threshold": (_set(["methods", "oracle_entropy", "routers"], ["entropy:0.5", "entropy:high"]),
                            "methods.oracle_entropy.routers[1]: malformed threshold 'high'"),
    "pair_small_larger": (_explicit_pairs, "pairs[0]: small model 'arith-l'"),
    "proxy_without_tuned": (_set(["models", "arith-m", "tuned"], None), "models.arith-m.tuned is not set"),
    "negative_k": (_set(["methods", "speculative", "k"], -2), "methods.speculative.k"),
    "alpha_not_positive": (_set(["methods", "contrastive", "alpha"], 0), "methods.contrastive.alpha"),
    "unknown_task": (_set(["benchmarks", "arith", "task"], "arithmetic_nonexistent"), "benchmarks.arith.task: unknown lm-eval task"),
    "pair_model_missing": (_set(["pairs", "all_ordered"], ["arith-xs", "arith-s", "arith-xxl"]),
                           "pairs.all_ordered[2]: model 'arith-xxl' has no entry under models"),
    "duplicate_model": (_duplicate_model, "arith-s: duplicate key"),
    "params_not_numeric": (_set(["models", "arith-s", "params"], "big"), "models.arith-s.params"),
    "limit_zero": (_set(["benchmarks", "arith", "limit"], 0), "benchmarks.arith.limit"),
    "unknown_top_level_key": (_typo_top_level, "modles: unknown key"),
    "tuned_not_a_model": (_tuned_missing, "models.arith-xs.tuned: tuned variant 'arith-xs-chat' has no entry"),
    "reserved_method_name": (lambda cfg: {**cfg, "methods": {**cfg["methods"], "single": {"method": "oracle"}}},
                             "methods.single: name must"),
    "negative_gpus": (_set(["models", "arith-l", "gpus"], -1), "models.arith-l.gpus"),
    "reference_missing": (_set(["reference"], "no/such/reference.csv"), "reference: file 'no/such/reference.csv' does not exist"),
    "learned_router_missing": (_set(["methods", "oracle_entropy", "routers"], ["entropy:0.5", "learned:no/router.joblib"]),
                               "methods.oracle_entropy.routers[1]: learned router file 'no/router.joblib' does not exist"),
}


def bad_config_text(case: str) -> str:
    """The YAML text of bad config `case` (the demo config with one thing wrong)."""
    edit, _ = BAD_CONFIGS[case]
    text = (REPO / "config" / "config.yaml").read_text()
    if edit is _duplicate_model:
        return edit(text)
    return yaml.safe_dump(edit(yaml.safe_load(text)), sort_keys=False)
