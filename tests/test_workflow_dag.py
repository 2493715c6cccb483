"""The Snakemake workflow as a DAG: lint, the paper grid's dry run (exact job counts, GPU
resources, with the SLURM executor and no cluster), stage targets, DAG build time."""

from __future__ import annotations

import time

import pytest

from test_workflow_support import copy_repo, dry_run_jobs, dry_run_resources, snakemake

# Qwen1.5 sizes of config/paper.yaml -> GPUs per job before `fetch` (no config.json: the weights of
# the job's models, pooled, x 1.25 over a card's usable 72.1 GiB), written out here, not computed
PAPER_PARAMS = {"0.5B": 0.5, "1.8B": 1.8, "4B": 4, "7B": 7, "14B": 14, "32B": 32, "72B": 72}
USABLE_GB = (80 * 0.92 - 1.5) * 2**30 / 1e9


def fallback_gpus(*sizes: str) -> int:
    return -(-sum(PAPER_PARAMS[s] for s in sizes) * 2 * 1.25 // USABLE_GB)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return copy_repo(tmp_path_factory.mktemp("wf") / "repo")


def size(model: str) -> str:
    return model.removeprefix("Qwen1.5-").removesuffix("-Chat")


def test_lint_is_clean(repo):
    done = snakemake(repo, "--lint")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Congratulations, your workflow is in a good condition!" in done.stdout + done.stderr


def test_paper_grid_dry_run_with_slurm_executor(repo):
    start = time.perf_counter()
    done = snakemake(repo, "--executor", "slurm", "--jobs", "100", "-n", "--configfile", "config/paper.yaml")
    print(f"\nslurm dry run of config/paper.yaml: {time.perf_counter() - start:.1f} s")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    counts = dry_run_jobs(out)
    n_pairs = 7 * 6 // 2
    # GSM8K, MMLU-STEM, MBPP, MT-Bench (chat pairs; proxy on the base pair) x 4 methods
    assert counts["decode_pair"] == n_pairs * 4 * 4
    # each model a benchmark's pairs use, once, shared by pairs; on the three base benchmarks also the
    # -Chat variants of the 6 models that are ever the large model (proxy tuning's reference)
    assert counts["decode_single"] == 7 * 3 + 14 + 6 * 3
    assert counts["score"] == counts["decode_pair"] + counts["decode_single"]
    assert counts["job_stats"] == counts["score"]
    # one per oracle job, MT-Bench's included (they skip at run time: no accuracy metric)
    assert counts["counterfactual"] == counts["counterfactual_score"] == n_pairs * 4
    # per benchmark (a change of one benchmark's task or data reruns only its jobs); fetch is a
    # target of its own (`snakemake fetch`, where there is internet), not an input of the run
    assert counts["task_overrides"] == counts["preflight_benchmark"] == 4
    assert "fetch" not in counts and counts["reference"] == 1
    assert "train_model" not in counts

    pair_jobs = dry_run_resources(out, "decode_pair")
    assert len(pair_jobs) == counts["decode_pair"]
    seen = set()
    for job in pair_jobs:
        wc, res = job["wildcards"], job["resources"]
        large, small = size(wc["large"]), size(wc["small"])
        assert PAPER_PARAMS[large] > PAPER_PARAMS[small]
        sizes = (large, small, small) if wc["variant"] == "proxy" else (large, small)  # + the small -Chat
        assert int(res["gpu"]) == fallback_gpus(*sizes), job
        assert int(res["nodes"]) == 1 and int(res["batch_size"]) == 8
        assert int(res["mem_mb"]) == 20 * 1024 and int(res["runtime"]) == 240  # before fetch: the fallbacks
        assert "slurm_extra" not in res
        if wc["benchmark"] == "mtbench":
            assert wc["large"].endswith("-Chat") == (wc["variant"] != "proxy")
        seen.add((wc["benchmark"], wc["variant"], wc["large"], wc["small"]))
    assert len(seen) == len(pair_jobs)
    for job in dry_run_resources(out, "decode_single"):
        assert int(job["resources"]["gpu"]) == fallback_gpus(size(job["wildcards"]["model"]))
    for job in dry_run_resources(out, "counterfactual"):  # a GPU job like its oracle job
        wc, res = job["wildcards"], job["resources"]
        assert wc["variant"] == "oracle" and int(res["gpu"]) == fallback_gpus(size(wc["large"]), size(wc["small"]))


def test_demo_dry_run_counts(repo):
    done = snakemake(repo, "-n")
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    counts = dry_run_jobs(out)
    methods = 8  # oracle, 2 entropy routers, contrastive, proxy, speculative, 2 seeds of sampled speculative
    assert counts["decode_pair"] == 6 * methods
    assert counts["decode_single"] == 4 + 3  # each model alone, and the tuned variants of the larges (proxy's reference)
    assert counts["train_model"] == 8  # 4 base + 4 tuned (arith-l-tuned: the reference of proxy tuning)
    assert counts["counterfactual"] == counts["counterfactual_score"] == 6  # the oracle (router always) jobs
    for job in dry_run_resources(out, "decode_pair") + dry_run_resources(out, "counterfactual"):
        assert int(job["resources"]["gpu"]) == 0


STAGE_TARGETS = {  # target -> a rule it must bring in
    "fetch": "fetch", "models_all": "train_model", "preflight": "preflight_benchmark", "decode_all": "decode_single",
    "score_all": "score", "stats_all": "job_stats", "counterfactual_all": "counterfactual_score",
}


def test_stage_targets(repo):
    for target, rule in STAGE_TARGETS.items():
        done = snakemake(repo, "-n", target, "--quiet", "rules")
        out = done.stdout + done.stderr
        assert done.returncode == 0, out[-3000:]
        assert rule in dry_run_jobs(out), (target, out[-2000:])


def test_dag_build_time_of_paper_grid(repo):
    """Printed, not asserted (the machine is shared): the target is <= 10 s."""
    start = time.perf_counter()
    done = snakemake(repo, "-n", "-q", "--configfile", "config/paper.yaml")
    elapsed = time.perf_counter() - start
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    print(f"\nsnakemake -n -q --configfile config/paper.yaml: {elapsed:.1f} s (target <= 10 s)")
