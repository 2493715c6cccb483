"""The embedded demo end to end (`snakemake --cores 2` in a temporary copy of the repository):
every declared output exists, the demo family behaves like the FS-GEN models (accuracy rises with
size; oracle collaboration is rare and rarer for a larger System 1), the report holds every
category, a second run has nothing to do, and a method parameter change reruns only that method.

Slow (the whole demo: data, 8 small models, 246 jobs): run with `pytest -m slow`."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from fsgen.pipeline.config import fill_defaults, load_yaml_unique
from fsgen.pipeline.jobs import expand_pairs
from fsgen.analysis.stats import primary_metric
from test_workflow_support import copy_repo, dry_run_jobs, snakemake, write_config

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
REPORT_CATEGORIES = ("Accuracy", "Collaboration", "Scaling law", "Uncertainty", "Routers", "Speculative")


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A temporary copy of the repository with the demo run in it. FSGEN_DEMO_REPO=<copy> reuses
    a copy where `snakemake --cores 2` already ran (checks only; the run is then not timed)."""
    reuse = os.environ.get("FSGEN_DEMO_REPO")
    repo = Path(reuse) if reuse else copy_repo(tmp_path_factory.mktemp("demo") / "repo", stub_scripts=False)
    start = time.perf_counter()
    done = snakemake(repo, "--cores", "2", timeout=3000)
    elapsed = time.perf_counter() - start
    print(f"\nsnakemake --cores 2 (the demo{', reused copy' if reuse else ', from scratch'}): {elapsed / 60:.1f} min")
    if os.environ.get("FSGEN_PIPELINE_REPORT") and not reuse:  # where to note the wall time (for the README)
        Path(os.environ["FSGEN_PIPELINE_REPORT"]).write_text(json.dumps({"demo_minutes": elapsed / 60}) + "\n")
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    config = load_yaml_unique(repo / "config" / "config.yaml")
    fill_defaults(config, load_yaml_unique(repo / "workflow" / "schemas" / "config.schema.yaml"))
    return repo, config


def read_json(path):
    return json.loads(path.read_text())


def test_every_declared_output_exists(demo):
    repo, _ = demo
    done = snakemake(repo, "--summary")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = [line.split("\t") for line in done.stdout.splitlines() if "\t" in line]
    header, rows = rows[0], rows[1:]
    status = header.index("status")
    assert len(rows) > 100
    missing = [row[0] for row in rows if "missing" in row[status]]
    assert not missing, missing[:20]


def test_accuracy_rises_with_size(demo):
    repo, config = demo
    family = config["pairs"]["all_ordered"]
    by_size = sorted(family, key=lambda n: config["models"][n]["params"])
    acc = [primary_metric(read_json(repo / "results" / "arith" / "single" / n / "metrics.json")) for n in by_size]
    print("\nexact match by size:", dict(zip(by_size, acc)))
    assert all(a < b for a, b in zip(acc, acc[1:])), acc
    assert acc[-1] - acc[0] >= 0.20, acc


def test_oracle_collaboration_is_rare_and_falls_with_small_size(demo):
    repo, config = demo
    freq = {}
    for large, small in expand_pairs(config):
        stats = read_json(repo / "results" / "arith" / "oracle" / f"{large}__{small}" / "stats.json")
        freq[large, small] = stats["stats"]["freq_pooled"]
    print("\noracle collaboration frequency:", {f"{l}__{s}": round(v, 3) for (l, s), v in freq.items()})
    assert all(v < 0.30 for v in freq.values()), freq
    params = {n: m["params"] for n, m in config["models"].items()}
    for large in {l for l, _ in freq}:
        smalls = sorted((s for l, s in freq if l == large), key=params.get)
        values = [freq[large, s] for s in smalls]
        assert all(a > b for a, b in zip(values, values[1:])), (large, dict(zip(smalls, values)))


def test_report_has_every_category(demo):
    repo, _ = demo
    report = repo / "results" / "report.html"
    assert report.exists() and report.stat().st_size > 10_000
    text = report.read_text(errors="replace")
    for category in REPORT_CATEGORIES:
        assert category in text, category


def test_second_run_has_nothing_to_do(demo):
    repo, _ = demo
    done = snakemake(repo, "-n")
    assert "Nothing to be done" in done.stdout + done.stderr, (done.stdout + done.stderr)[-3000:]


def test_rerun_from_scratch_gives_identical_results(demo, tmp_path):
    """Two decode jobs and everything after them, recomputed from nothing (their outputs and the
    resume cache removed), give the same traces (as data), generations, metrics and statistics."""
    import shutil

    import pyarrow.parquet as pq

    repo, _ = demo
    jobs = [Path("results/arith/contrastive/arith-l__arith-s"), Path("results/arith/speculative/arith-m__arith-xs")]
    for job in jobs:
        shutil.copytree(repo / job, tmp_path / job.name)
    shutil.rmtree(repo / "results" / ".resume", ignore_errors=True)  # else the rerun reads its cache
    targets = [str(job / "stats.json") for job in jobs]
    done = snakemake(repo, "--cores", "2", "--forcerun", "decode_pair", "--allowed-rules", "decode_pair", "score",
                     "job_stats", "--", *targets, timeout=1500)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    for job in jobs:
        first, again = tmp_path / job.name, repo / job
        assert pq.read_table(first / "trace.parquet").equals(pq.read_table(again / "trace.parquet")), job
        assert (first / "generations.jsonl").read_text() == (again / "generations.jsonl").read_text(), job
        assert read_json(first / "metrics.json")["metrics"] == read_json(again / "metrics.json")["metrics"], job
        before, after = read_json(first / "stats.json"), read_json(again / "stats.json")
        assert before["stats"] == after["stats"] and before["seeds"] == after["seeds"], job


def test_parameter_change_reruns_only_what_depends_on_it(demo):
    repo, config = demo
    changed = load_yaml_unique(repo / "config" / "config.yaml")
    changed["methods"]["speculative"]["k"] = 3
    write_config(repo / "config" / "k3.yaml", changed)
    done = snakemake(repo, "--cores", "2", "--configfile", "config/k3.yaml", timeout=1500)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    ran = dry_run_jobs(out)  # a real run prints the same "Job stats" table before it starts
    n_pairs = len(expand_pairs(config))
    assert ran.get("decode_pair") == n_pairs  # the speculative pairs, no other method
    assert "decode_single" not in ran and "train_model" not in ran
    assert "preflight_benchmark" not in ran and "task_overrides" not in ran  # setup jobs never hide a params change
    assert ran.get("score") == n_pairs and ran.get("job_stats") == n_pairs
    trace_meta = read_json(repo / "results" / "arith" / "speculative" / "arith-l__arith-xs" / "stats.json")
    assert trace_meta["job"]["k"] == 3
    assert "Nothing to be done" in (lambda d: d.stdout + d.stderr)(snakemake(repo, "-n", "--configfile", "config/k3.yaml"))
