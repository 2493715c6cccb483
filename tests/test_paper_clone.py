"""The paper DAG from a fresh clone (issue #12 item 1): `git clone` of this checkout's HEAD, nothing
beside it, `snakemake -n --configfile config/paper.yaml` builds the grid (with and without the
shipped reference); the light per-job rules are local rules (item 7); multi-GPU jobs ask for one node."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_workflow_support import REPO, dry_run_jobs, dry_run_resources

pytestmark = pytest.mark.timeout(900)
LIGHT_RULES = ("score", "job_stats", "viewer_page", "reference", "aggregate", "figures", "summary", "report")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """A clone of this checkout's HEAD commit in an empty folder (uncommitted edits are not in it)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    dest = tmp_path_factory.mktemp("fresh") / "fsgen"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(REPO), str(dest)], check=True)
    subprocess.run(["git", "-C", str(dest), "checkout", "-q", head], check=True)
    assert not (dest.parent / "shared").exists() and sorted(p.name for p in dest.parent.iterdir()) == ["fsgen"]
    return dest


def snakemake_in(clone: Path, *args: str) -> subprocess.CompletedProcess:
    """Snakemake with the clone's own fsgen package first on the path."""
    env = {**os.environ, "PYTHONPATH": str(clone), "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=600)


def test_fresh_clone_builds_the_paper_dag(clone):
    done = snakemake_in(clone, "-n", "--configfile", "config/paper.yaml")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    counts = dry_run_jobs(out)
    assert counts["decode_pair"] == 21 * 4 * 4 and counts["decode_single"] == 7 * 3 + 6 * 3 + 14
    assert counts["reference"] == 1 and counts["aggregate"] == 1 and counts["report"] == 1
    for job in dry_run_resources(out, "decode_pair"):
        res = job["resources"]
        assert int(res["nodes"]) == 1 and int(res["gpu"]) >= 1 and int(res["runtime"]) <= 1440, job
    big = [j for j in dry_run_resources(out, "decode_pair") if j["wildcards"]["large"] == "Qwen1.5-72B"]
    assert big and all(int(j["resources"]["gpu"]) >= 3 for j in big)  # 145 GB of weights on 80 GB cards


def test_reference_null_on_the_command_line_means_no_comparison(clone):
    done = snakemake_in(clone, "-n", "--configfile", "config/paper.yaml", "--config", "reference=null")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    counts = dry_run_jobs(out)
    assert "reference" not in counts and counts["aggregate"] == 1
    assert "paper_comparison.csv" not in out


def test_light_rules_are_local(clone, monkeypatch):
    """score, job_stats and the other per-job analyses run in Snakemake's process on a cluster too,
    never as hundreds of one-CPU SLURM jobs; decoding is what is submitted."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import ConfigSettings, OutputSettings, ResourceSettings

    monkeypatch.chdir(clone)
    monkeypatch.syspath_prepend(str(clone))
    with SnakemakeApi(OutputSettings(quiet=True)) as api:
        workflow = api.workflow(resource_settings=ResourceSettings(), snakefile=clone / "Snakefile", workdir=clone,
                                config_settings=ConfigSettings(configfiles=[clone / "config" / "paper.yaml"]))
        local = set(workflow._workflow._localrules)
    assert set(LIGHT_RULES) <= local, set(LIGHT_RULES) - local
    assert not {"decode_pair", "decode_single"} & local
