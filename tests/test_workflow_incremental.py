"""Incremental reruns on a small config with stub rule scripts (no models, seconds per job):
a finished workflow has nothing to do; a method parameter reruns only that method's jobs and
what depends on them; analysis code reruns analyses only; decoding code reruns decode jobs but
not training. The real pipeline repeats the first two checks in tests/test_pipeline_demo.py."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from test_workflow_support import copy_repo, demo_config, dry_run_jobs, snakemake, write_config

DECODE_RULES = {"decode_pair", "decode_single"}


def small_config() -> dict:
    """3 models (3 pairs) x oracle, contrastive, proxy on 10 documents: 9 pair jobs and 4 singles
    (each model alone, and arith-s-tuned: the tuned large of a proxy pair, its reference)."""
    cfg = demo_config()
    keep = ["arith-xs", "arith-s", "arith-m"]
    cfg["models"] = {n: m for n, m in cfg["models"].items() if n in keep or n in ("arith-xs-tuned", "arith-s-tuned")}
    cfg["models"]["arith-m"]["tuned"] = None
    cfg["pairs"] = {"all_ordered": keep}
    cfg["methods"] = {k: cfg["methods"][k] for k in ("oracle", "contrastive", "proxy")}
    cfg["benchmarks"]["arith"]["limit"] = 10
    return cfg


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repo(tmp_path_factory.mktemp("wf") / "repo", stub_scripts=True)
    write_config(repo / "config" / "small.yaml", small_config())
    done = snakemake(repo, "--cores", "2", "--configfile", "config/small.yaml")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    return repo


def planned(repo: Path, *args: str) -> dict[str, int]:
    done = snakemake(repo, "-n", "--configfile", "config/small.yaml", *args)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    return dry_run_jobs(out)


def planned_after_edit(repo: Path, relpath: str) -> dict[str, int]:
    """Jobs a dry run plans once `relpath` is edited (a comment appended: new content, newer
    mtime; Snakemake ignores a bare touch of a file whose checksum it recorded); then restored."""
    path = repo / relpath
    text, before = path.read_text(), path.stat()
    path.write_text(text + "\n# edited\n")
    now = time.time()  # newer than every output (the copy keeps the originals' mtimes)
    os.utime(path, (now, now + 60))
    try:
        return planned(repo)
    finally:
        path.write_text(text)
        os.utime(path, (before.st_atime, before.st_mtime))


def test_finished_workflow_has_nothing_to_do(repo):
    for d in ("results/arith/oracle/arith-m__arith-xs", "results/arith/single/arith-s"):
        for name in ("trace.parquet", "samples.jsonl", "metrics.json", "stats.json"):
            assert (repo / d / name).exists(), f"{d}/{name}"
    done = snakemake(repo, "-n", "--configfile", "config/small.yaml")
    assert "Nothing to be done" in done.stdout + done.stderr, (done.stdout + done.stderr)[-2000:]


def test_report_has_every_category(repo):
    text = (repo / "results" / "report.html").read_text(errors="replace")
    for category in ("Accuracy", "Collaboration", "Scaling law", "Uncertainty", "Routers", "Speculative"):
        assert category in text, category


def test_method_parameter_change_reruns_only_that_method(repo):
    cfg = small_config()
    cfg["methods"]["contrastive"]["beta"] = 0.9
    write_config(repo / "config" / "small_beta.yaml", cfg)
    done = snakemake(repo, "-n", "--configfile", "config/small_beta.yaml", "--quiet", "rules")
    counts = dry_run_jobs(done.stdout + done.stderr)
    assert counts.get("decode_pair") == 3  # the 3 contrastive pairs, nothing else decodes
    assert "decode_single" not in counts and "train_model" not in counts
    assert counts.get("score") == 3 and counts.get("job_stats") == 3
    assert "preflight_benchmark" not in counts and "task_overrides" not in counts


def test_benchmark_parameter_change_reruns_that_benchmarks_jobs(repo):
    """A benchmark's limit changes what its jobs decode, not its derived task or its preflight: no
    setup job reruns, so none hides the decode jobs' params change (rules/models.smk)."""
    cfg = small_config()
    cfg["benchmarks"]["arith"]["limit"] = 8
    write_config(repo / "config" / "small_limit.yaml", cfg)
    done = snakemake(repo, "-n", "--configfile", "config/small_limit.yaml", "--quiet", "rules")
    counts = dry_run_jobs(done.stdout + done.stderr)
    assert counts.get("decode_pair") == 9 and counts.get("decode_single") == 4, counts
    assert "preflight_benchmark" not in counts and "task_overrides" not in counts and "fetch" not in counts


def test_analysis_code_change_reruns_analyses_only(repo):
    counts = planned_after_edit(repo, "fsgen/analysis/stats.py")
    assert counts.get("job_stats") == 9 + 4
    assert not DECODE_RULES & set(counts) and "score" not in counts and "train_model" not in counts


def test_decoding_code_change_reruns_decode_jobs_not_training(repo):
    counts = planned_after_edit(repo, "fsgen/decoding/engine.py")
    assert counts.get("decode_pair") == 9 and counts.get("decode_single") == 4
    assert "train_model" not in counts and "demo_data" not in counts


def test_scoring_code_change_reruns_scores_not_decoding(repo):
    counts = planned_after_edit(repo, "fsgen/harness/replay.py")
    assert counts.get("score") == 13
    assert not DECODE_RULES & set(counts)


def test_state_is_clean_after_the_checks(repo):
    assert planned(repo) == {}
