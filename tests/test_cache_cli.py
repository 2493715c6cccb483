"""`fsgen cache`: lists the resume cache's folders with their parts and removes only those no
current job uses (dry run by default)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from fsgen.cache import current_folder, judge
from fsgen.cli import main
from fsgen.fingerprint import decode_environment
from fsgen.resume import CacheLocked, ResumeCache, job_key, list_caches, remove_cache

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {
    "models": {"l": {"path": "models/l", "params": 2000}, "s": {"path": "models/s", "params": 1000}},
    "pairs": [{"large": "l", "small": "s"}],
    "methods": {"oracle": {"method": "oracle"}},
    "benchmarks": {"arith": {"task": "arith"}},
}
ORACLE = {"benchmark": "arith", "variant": "oracle", "large": "l", "small": "s"}
SINGLE_S = {"benchmark": "arith", "model": "s"}
GONE = {"benchmark": "arith", "variant": "contrastive", "large": "l", "small": "s"}  # not in CONFIG


def parts(job, code=None, versions=None, seed=0) -> dict | None:
    current = decode_environment()
    return {"models": {"large": {"path": "models/l", "fingerprint": "f" * 64}},
            "decode": {"method": "oracle", "router": "always", "seed": seed},
            "code": code or current["code"], "versions": versions or current["versions"],
            "tasks": ["arith"], "job": job}


def make_folder(cache_dir: Path, folder_parts, records: int, age_s: float) -> Path:
    """A cache folder with `records` records, last written `age_s` seconds ago."""
    key = job_key(**(folder_parts or {"bare": age_s}))
    with ResumeCache(cache_dir, key, parts=folder_parts) as cache:
        for i in range(records):
            cache.put(f"r{i}", {"text": "x" * 10})
    when = 1_700_000_000 - age_s
    for path in [*cache.folder.iterdir(), cache.folder]:
        os.utime(path, (when, when))
    return cache.folder


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow" / "schemas").symlink_to(ROOT / "workflow" / "schemas")
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(CONFIG))
    cache_dir = tmp_path / "results" / ".resume"
    old_versions = {**decode_environment()["versions"], "torch": "1.0"}
    folders = {
        "current": make_folder(cache_dir, parts(ORACLE), 3, age_s=10),
        "older code": make_folder(cache_dir, parts(ORACLE, code="0" * 64), 5, age_s=100),
        "older libraries": make_folder(cache_dir, parts(ORACLE, versions=old_versions), 2, age_s=200),
        "other settings, current code": make_folder(cache_dir, parts(ORACLE, seed=1), 1, age_s=300),
        "only folder of its job, old code": make_folder(cache_dir, parts(SINGLE_S, code="1" * 64), 4, age_s=50),
        "job not in config": make_folder(cache_dir, parts(GONE), 6, age_s=20),
        "no job": make_folder(cache_dir, parts(None), 1, age_s=30),
        "no key.json": make_folder(cache_dir, None, 2, age_s=40),
    }
    (cache_dir / ".removing-abc.12").mkdir()  # an interrupted removal
    return tmp_path, folders


KEPT = {"current", "other settings, current code", "only folder of its job, old code"}


def test_judge_keeps_what_a_job_may_resume(workdir):
    root, folders = workdir
    from fsgen.pipeline.jobs import decode_jobs, single_jobs
    from fsgen.status import load_config

    config = load_config(root)
    verdicts = judge(list_caches(root / "results" / ".resume"), decode_jobs(config) + single_jobs(config),
                     decode_environment())
    removed = {v.entry.folder for v in verdicts if v.remove}
    assert removed == {folders[name] for name in folders if name not in KEPT}
    reasons = {v.entry.folder: v.reason.split(":")[0] for v in verdicts}
    unused = ("older code", "older libraries", "job not in config", "no job", "no key.json")
    assert [reasons[folders[n]] for n in unused] == ["superseded", "superseded", "not in config", "no job", "no job"]
    # fsgen status counts the folder a new attempt of the job would resume
    assert current_folder(list_caches(root / "results" / ".resume"), ORACLE, decode_environment()).folder \
        == folders["current"]
    assert current_folder(list_caches(root / "results" / ".resume"), SINGLE_S, decode_environment()) is None


def test_dry_run_lists_parts_then_remove_removes_only_unused(workdir, capsys):
    root, folders = workdir
    assert main(["cache", "--workdir", str(root)]) == 0
    out = capsys.readouterr().out
    assert all(folder.exists() for folder in folders.values())  # a dry run removes nothing
    block = out.split(str(folders["older code"]))[1].split("\n\n")[0]
    assert block.startswith("  (5 requests, ")
    assert "job      arith/oracle/l__s  (tasks arith)" in block and "code     000000000000 (not current)" in block
    assert "method   oracle  (router always, seed 0)" in block and "large models/l (ffffffffffff)" in block
    assert f"REMOVE {folders['job not in config']}" in out and f"keep   {folders['current']}" in out
    assert "8 cache folders" in out and "5 unused" in out and "run with --remove" in out

    assert main(["cache", "--workdir", str(root), "--remove"]) == 0
    left = {p for p in (root / "results" / ".resume").iterdir()}
    assert left == {folders[name] for name in KEPT}


def test_a_folder_being_written_is_never_removed(workdir):
    root, folders = workdir
    with ResumeCache(root / "results" / ".resume", folders["job not in config"].name) as writing:
        writing.put("new", {"text": ""})  # holds the writer lock
        with pytest.raises(CacheLocked):
            remove_cache(writing.folder)
        (entry,) = [e for e in list_caches(root / "results" / ".resume") if e.folder == writing.folder]
        assert entry.locked
        assert main(["cache", "--workdir", str(root), "--remove"]) == 0
        assert writing.folder.exists()
    assert json.loads((writing.folder / "key.json").read_text())["parts"]["job"] == GONE


def test_bad_config_is_one_line(tmp_path, capsys):
    assert main(["cache", "--workdir", str(tmp_path)]) == 2
    assert "config file not found" in capsys.readouterr().err
