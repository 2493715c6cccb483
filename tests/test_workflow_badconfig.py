"""Bad configs are rejected by `snakemake -n` itself, with a message naming the key at fault
(the same cases as tests/test_workflow_config.py, there checked as pure functions)."""

from __future__ import annotations

import pytest

from test_workflow_support import BAD_CONFIGS, bad_config_text, copy_repo, snakemake


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("wf") / "repo")


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_snakemake_dry_run_rejects(repo, case):
    path = repo / "config" / f"bad_{case}.yaml"
    path.write_text(bad_config_text(case))
    done = snakemake(repo, "-n", "--configfile", str(path), timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out[-2000:]
    _, expected = BAD_CONFIGS[case]
    assert "invalid config" in out and expected in out, out[-2000:]
    assert "Building DAG of jobs" not in out  # rejected while reading the config, before any job
