"""The paper grid end to end on stand-in models (issues #12 and #17): the real config/paper.yaml,
its hub ids redirected to tiny random Qwen2-architecture models (`--config model_mirror=`), its
four benchmarks to two documents each in their own formats (`data_mirror=tests/data/paper_mirror`),
every method, `gpus:` as paper.yaml has them (none: planned), on the CPU. The pairs are cut to
the three smallest sizes (`--config pairs=...`: 3 base pairs, their -Chat pairs on MT-Bench) so
the run fits CI: every kind of job of the full grid (all 21 pairs are `snakemake -n` in
test_paper_clone.py and test_workflow_dag.py) still runs for real.

Asserts that every decode, score and statistics job finished, that the comparison with the published
table joins our rows to the paper's by model name on every benchmark (MT-Bench's under the -Chat
pairs), that chat-model prompts were rendered with the chat template (and only those), and that
the run ends with results/report.html.

Slow (81 decode and counterfactual jobs, each a process that imports torch, transformers and
lm-eval; score, statistics and viewer jobs in Snakemake's process): run with `pytest -m slow`.
FSGEN_STANDIN_REPO=<copy> reuses a copy where the run already finished (checks only);
FSGEN_STANDIN_CORES sets Snakemake's --cores (default 2)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd
import pytest

from fsgen.harness.tasks import TASKS_DIR
from fsgen.pipeline import jobs
from fsgen.pipeline.checks import load_and_check
from fsgen.pipeline.config import load_yaml_unique
from fsgen.pipeline.paths import job_dir
from fsgen.testing import build_qwen15_standin
from test_workflow_support import REPO, copy_repo, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]
PAIR_MODELS = ("Qwen1.5-0.5B", "Qwen1.5-1.8B", "Qwen1.5-4B")  # the grid's three smallest sizes: 3 pairs
BENCHMARKS = ("gsm8k", "mmlu_stem", "mbpp", "mtbench")
CHAT_BENCHMARKS = ("mtbench",)
JOB_FILES = ("trace.parquet", "samples.jsonl", "generations.jsonl", "metrics.json", "stats.json")


def run_args(root: Path) -> list[str]:
    return ["--configfile", "config/paper.yaml", "--config", f"model_mirror={root / 'mirror'}",
            "data_mirror=tests/data/paper_mirror", f"cache_dir={root / 'hf'}",
            f"pairs={{all_ordered: [{', '.join(PAIR_MODELS)}]}}"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    """(repository copy, its checked config) after the whole run."""
    reuse = os.environ.get("FSGEN_STANDIN_REPO")
    repo = Path(reuse) if reuse else copy_repo(tmp_path_factory.mktemp("standin") / "repo", stub_scripts=False)
    root = repo.parent
    if not reuse:
        corpus = [p.read_text() for p in sorted((repo / "tests" / "data" / "paper_mirror").glob("*.jsonl"))]
        build_qwen15_standin(root / "mirror", corpus=corpus)
        start = time.perf_counter()
        done = snakemake(repo, "--cores", os.environ.get("FSGEN_STANDIN_CORES", "2"), *run_args(root),
                         timeout=3600 - 300)
        print(f"\nstand-in paper grid: {(time.perf_counter() - start) / 60:.1f} min")
        assert done.returncode == 0, (done.stdout + done.stderr)[-8000:]
    config = {**load_yaml_unique(repo / "config" / "paper.yaml"), "model_mirror": str(root / "mirror"),
              "data_mirror": "tests/data/paper_mirror", "cache_dir": str(root / "hf"),
              "pairs": {"all_ordered": list(PAIR_MODELS)}}
    cwd = os.getcwd()
    os.chdir(repo)  # relative paths (reference, data) as Snakemake resolved them
    try:
        config = load_and_check(config, repo / "workflow" / "schemas" / "config.schema.yaml",
                                task_include_paths=[TASKS_DIR])
    finally:
        os.chdir(cwd)
    return repo, config


def test_the_real_paper_config_ran(standin):
    repo, _ = standin
    assert (repo / "config" / "paper.yaml").read_bytes() == (REPO / "config" / "paper.yaml").read_bytes()


def test_every_decode_score_and_statistics_job_finished(standin):
    repo, config = standin
    pair_jobs, single_jobs = jobs.decode_jobs(config), jobs.single_jobs(config)
    assert len(pair_jobs) == 3 * 4 * 4  # 3 pairs (their -Chat pairs on MT-Bench) x 4 methods x 4 benchmarks
    # each model alone: the base models (System 1 and System 2 alone), each large model's -Chat
    # (what proxy tuning approximates); on MT-Bench the -Chat models and the proxy's base pairs
    alone = {(b, m) for b in ("gsm8k", "mmlu_stem", "mbpp") for m in ("0.5B", "1.8B", "4B", "1.8B-Chat", "4B-Chat")}
    alone |= {("mtbench", m) for m in ("0.5B", "0.5B-Chat", "1.8B", "1.8B-Chat", "4B", "4B-Chat")}
    assert {(j["benchmark"], j["model"]) for j in single_jobs} == {(b, f"Qwen1.5-{m}") for b, m in alone}
    all_jobs = pair_jobs + single_jobs
    missing = [str(job_dir(j) / name) for j in all_jobs for name in JOB_FILES if not (repo / job_dir(j) / name).is_file()]
    assert not missing, missing[:10]
    again = snakemake(repo, "-n", *run_args(repo.parent))
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]


def test_comparison_with_the_paper_joins_on_every_benchmark(standin):
    repo, config = standin
    table = pd.read_csv(repo / "results" / "tables" / "paper_comparison.csv")
    published = table[table["freq_paper"].notna()]
    assert len(published) == 168  # the paper's whole table, whichever pairs ran
    assert set(published["benchmark"]) == set(BENCHMARKS)
    base_name = lambda names: names.str.removesuffix("-Chat")  # noqa: E731
    ours = published[base_name(published["small_model"]).isin(PAIR_MODELS)
                     & base_name(published["large_model"]).isin(PAIR_MODELS)]
    # our 3 pairs: oracle, contrastive and proxy on every benchmark (the paper publishes no speculative
    # row), less the one the paper lacks (contrastive, MBPP, 4B / 0.5B)
    assert len(ours) == 3 * 3 * 4 - 1, ours.to_dict("records")
    joined = published[published["our_variant"].notna()]
    assert len(joined) == len(ours), published[published["our_variant"].isna()].head().to_dict("records")
    mt = joined[joined["benchmark"] == "mtbench"]
    assert (mt[mt["method"] != "proxy"]["large_model"].str.endswith("-Chat")).all()
    assert not mt[mt["method"] == "proxy"]["large_model"].str.endswith("-Chat").any()
    # our value is there wherever a job generated tokens; otherwise the status says why
    assert joined["freq_ours"].notna().mean() > 0.9, joined[joined["freq_ours"].isna()].head().to_dict("records")


def prompts(repo: Path, job: dict) -> list[str]:
    lines = (repo / job_dir(job) / "generations.jsonl").read_text().splitlines()
    return [json.loads(line)["prompt"] for line in lines]


def test_chat_prompts_for_the_chat_benchmark_only(standin):
    repo, config = standin
    for job in jobs.decode_jobs(config) + jobs.single_jobs(config):
        rendered = prompts(repo, job)
        assert len(rendered) == 2, job
        if job["benchmark"] in CHAT_BENCHMARKS:
            assert all(p.startswith("<|im_start|>") and p.endswith("<|im_start|>assistant\n") for p in rendered), job
            # rendered by the shared tokenizer (the first role's: the small model, or the lone model);
            # the -Chat tokenizer's template adds Qwen's default system prompt, the base one's does not
            chat = (job.get("model") or job["small"]).endswith("-Chat")
            assert all(("<|im_start|>system\nYou are a helpful assistant." in p) == chat for p in rendered), job
        else:
            assert not any("<|im_start|>" in p for p in rendered), job


def test_the_run_ends_with_the_report(standin):
    repo, _ = standin
    report = repo / "results" / "report.html"
    assert report.is_file() and report.stat().st_size > 100_000
    for name in ("summary.md", "figures/collaboration.png", "tables/jobs.csv"):
        assert (repo / "results" / name).is_file(), name
