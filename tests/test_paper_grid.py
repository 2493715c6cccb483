"""config/paper.yaml as the pipeline sees it (issue #12, pipeline side): the authors' token budget,
proxy tuning on MT-Bench, resources from the models' sizes (planner, fallback, overrides, caps,
one node), score and statistics as local rules, the SLURM plugin pinned to the profile's series,
and the published rows joined under our model names. Pure functions: no Snakemake run."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pytest

from fsgen.pipeline import checks, jobs, resources
from fsgen.pipeline.config import ConfigError, fill_defaults, load_yaml_unique, validate_schema
from fsgen.pipeline.mirror import apply_mirrors
from fsgen.pipeline.preflight import _model_groups
from fsgen.pipeline.reference import align_reference
from test_workflow_support import REPO

SCHEMA = load_yaml_unique(REPO / "workflow" / "schemas" / "config.schema.yaml")
TASKS = {"gsm8k_cot", "mmlu_stem_cot", "mbpp_local", "mtbench_first_turn"}
ARCH = json.loads((REPO / "config" / "reference" / "qwen1.5_architectures.json").read_text())["models"]
SIZES = ("0.5B", "1.8B", "4B", "7B", "14B", "32B", "72B")
GIB = 1 << 30


def paper(**top) -> dict:
    """config/paper.yaml checked as the Snakefile checks it, with top-level keys replaced."""
    config = {**load_yaml_unique(REPO / "config" / "paper.yaml"), **top}
    validate_schema(config, SCHEMA)
    fill_defaults(config, SCHEMA)
    apply_mirrors(config)
    checks.validate_config(config, task_names=TASKS)
    return config


@pytest.fixture(scope="module")
def config_json_mirror(tmp_path_factory) -> Path:
    """A model mirror holding only each Qwen1.5 model's config.json (real architectures; a -Chat
    model has its base's): enough for the planner, nothing to load."""
    root = tmp_path_factory.mktemp("arch_mirror")
    for size in SIZES:
        fields = {k: v for k, v in ARCH[f"Qwen1.5-{size}"].items() if k != "source"}
        for suffix in ("", "-Chat"):
            folder = root / "Qwen" / f"Qwen1.5-{size}{suffix}"
            folder.mkdir(parents=True)
            (folder / "config.json").write_text(json.dumps({**fields, "model_type": "qwen2"}))
    return root


def pair_job(benchmark, variant, large, small):
    return {"benchmark": benchmark, "variant": variant, "large": f"Qwen1.5-{large}", "small": f"Qwen1.5-{small}"}


# ------------------------------------------------------------------ faithful defaults (item 6)
def test_every_paper_task_generates_up_to_512_tokens():
    config = paper()
    assert {b: config["benchmarks"][b]["max_new_tokens"] for b in config["benchmarks"]} == \
        {"gsm8k": 512, "mmlu_stem": 512, "mbpp": 512, "mtbench": 512}


def test_proxy_tuning_runs_on_mtbench_with_the_base_pair_and_the_small_chat_model():
    config = paper()
    pair_jobs = jobs.decode_jobs(config)
    assert len(pair_jobs) == 21 * 4 * 4  # every pair x every method x every benchmark
    mt = [j for j in pair_jobs if j["benchmark"] == "mtbench"]
    proxy = [j for j in mt if j["variant"] == "proxy"]
    assert len(proxy) == 21
    for job in proxy:
        assert not job["large"].endswith("-Chat") and not job["small"].endswith("-Chat")
        assert jobs.job_models(config, job) == {"large": job["large"], "small": job["small"],
                                                "small_tuned": job["small"] + "-Chat"}
    assert all(j["large"].endswith("-Chat") and j["small"].endswith("-Chat") for j in mt if j["variant"] != "proxy")
    # baselines for every model a benchmark's pairs use: MT-Bench needs the base models for proxy's pairs
    singles = jobs.single_jobs(config)
    assert len([s for s in singles if s["benchmark"] == "mtbench"]) == 14
    # and on the base benchmarks the base models plus the -Chat of every large model (proxy's reference)
    assert len([s for s in singles if s["benchmark"] == "gsm8k"]) == 7 + 6


def test_chat_template_is_on_exactly_for_the_chat_benchmark():
    config = paper()
    assert {b: jobs.chat_template(config, b) for b in config["benchmarks"]} == \
        {"gsm8k": False, "mmlu_stem": False, "mbpp": False, "mtbench": True}
    config["benchmarks"]["mtbench"]["chat_template"] = None  # null: true for models: tuned
    config["benchmarks"]["gsm8k"]["chat_template"] = None
    assert jobs.chat_template(config, "mtbench") and not jobs.chat_template(config, "gsm8k")


def test_preflight_checks_the_tokenizers_of_every_job_together():
    config = paper()
    groups = [set(names) for _, names in _model_groups(config, [])]
    for job in jobs.decode_jobs(config):
        models = set(jobs.job_models(config, job).values())
        assert any(models <= group for group in groups), job


# ------------------------------------------------------------------ resources (item 7)
def test_gpus_planned_from_config_json(config_json_mirror):
    """At 800 prompt + 512 new tokens, batch 8 (gsm8k): docs/slurm.md's placement examples, which
    tests/test_placement.py checks against its own accounting."""
    for memory, expected in ((80, {"72B+0.5B": 3, "32B+14B": 2, "proxy 72B+32B": 5}),
                             (141, {"72B+0.5B": 2, "32B+14B": 1, "proxy 72B+32B": 3})):
        config = paper(model_mirror=str(config_json_mirror))
        config["resources"]["gpu_memory_gb"] = memory
        got = {"72B+0.5B": resources.job_gpus(config, pair_job("gsm8k", "oracle", "72B", "0.5B")),
               "32B+14B": resources.job_gpus(config, pair_job("gsm8k", "oracle", "32B", "14B")),
               "proxy 72B+32B": resources.job_gpus(config, pair_job("gsm8k", "proxy", "72B", "32B"))}
        assert got == expected, memory
    # a model's gpus: n are cards of its own; the 0.5B then needs one more
    config = paper(model_mirror=str(config_json_mirror))
    config["models"]["Qwen1.5-72B"]["gpus"] = 4
    assert resources.job_gpus(config, pair_job("gsm8k", "oracle", "72B", "0.5B")) == 5


def test_gpus_planned_from_the_hub_cache_after_fetch(tmp_path):
    """`snakemake fetch` leaves config.json in the Hugging Face cache (cache_dir/hub, hub layout)."""
    for size in SIZES:
        fields = {k: v for k, v in ARCH[f"Qwen1.5-{size}"].items() if k != "source"}
        for suffix in ("", "-Chat"):
            repo = tmp_path / "hub" / f"models--Qwen--Qwen1.5-{size}{suffix}"
            (repo / "refs").mkdir(parents=True)
            (repo / "refs" / "main").write_text("0" * 40)
            (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
            (repo / "snapshots" / ("0" * 40) / "config.json").write_text(json.dumps({**fields, "model_type": "qwen2"}))
    config = paper(cache_dir=str(tmp_path))
    assert resources.job_gpus(config, pair_job("gsm8k", "proxy", "72B", "32B")) == 5
    assert resources.decode_runtime(config, pair_job("gsm8k", "proxy", "72B", "32B"), 1) != 240  # planned


def test_gpus_before_fetch_pool_the_weights():
    """No config.json anywhere (a fresh clone): ceil(weights x 1.25 / usable card), usable = 80 GiB
    less 8% and 1.5 GiB."""
    config = paper()
    usable = 80 * GIB * 0.92 - 1.5 * GIB
    for large, small, variant, params in (("72B", "0.5B", "oracle", 72.5e9), ("32B", "14B", "oracle", 46e9),
                                          ("72B", "32B", "proxy", 136e9), ("1.8B", "0.5B", "oracle", 2.3e9)):
        expected = math.ceil(params * 2 * 1.25 / usable)
        assert resources.job_gpus(config, pair_job("gsm8k", variant, large, small)) == expected, (large, small)
    assert resources.job_gpus(config, {"benchmark": "mbpp", "model": "Qwen1.5-72B"}) == 3
    config["models"]["Qwen1.5-72B"]["gpus"] = 4  # the override counts on its own
    assert resources.job_gpus(config, pair_job("gsm8k", "oracle", "72B", "0.5B")) == 5
    for model in config["models"].values():
        model["gpus"] = 0
    assert resources.job_gpus(config, pair_job("gsm8k", "oracle", "72B", "0.5B")) == 0


def test_host_memory_does_not_grow_with_the_model_on_gpus(config_json_mirror):
    config = paper(model_mirror=str(config_json_mirror))
    big = resources.decode_mem_mb(config, pair_job("mbpp", "proxy", "72B", "32B"), 1)
    small = resources.decode_mem_mb(config, pair_job("gsm8k", "oracle", "1.8B", "0.5B"), 1)
    assert big == small == (12 + 8) * 1024  # libraries + one shard's buffer (MiB)
    assert resources.decode_mem_mb(config, pair_job("gsm8k", "oracle", "1.8B", "0.5B"), 2) == 30 * 1024
    config["resources"]["decode_mem_mb"] = 5000
    assert resources.decode_mem_mb(config, pair_job("gsm8k", "oracle", "1.8B", "0.5B"), 3) == 11250


def test_runtime_guess_follows_the_job_and_no_attempt_exceeds_the_cap(config_json_mirror):
    config = paper(model_mirror=str(config_json_mirror))
    assert config["resources"]["max_runtime"] == 1440
    heavy, light = pair_job("mbpp", "proxy", "72B", "32B"), pair_job("mtbench", "oracle", "1.8B", "0.5B")
    assert resources.decode_runtime(config, heavy, 1) > 2 * resources.decode_runtime(config, light, 1)
    for job in jobs.decode_jobs(config)[::7]:
        limits = [resources.decode_runtime(config, job, attempt) for attempt in (1, 2, 3, 4)]
        assert limits == sorted(limits) and max(limits) <= 1440, (job, limits)
    # a flat first attempt grows 1.5x per retry and stops at the cap (old: 720 -> 1080 -> 1620)
    config["resources"]["decode_runtime"] = 720
    assert [resources.decode_runtime(config, heavy, a) for a in (1, 2, 3)] == [720, 1080, 1440]
    config["resources"]["max_runtime"] = 600
    assert resources.decode_runtime(config, heavy, 1) == 600
    assert resources.capped_runtime(config, 10_000) == 600


def test_runtime_before_fetch_is_the_documented_fallback():
    config = paper()
    job = pair_job("gsm8k", "oracle", "72B", "0.5B")
    assert [resources.decode_runtime(config, job, a) for a in (1, 2, 3)] == [240, 360, 540]


def test_an_unplaceable_job_names_the_model(config_json_mirror):
    config = paper(model_mirror=str(config_json_mirror))
    config["resources"]["gpu_memory_gb"] = 8
    with pytest.raises(ConfigError, match=r"benchmarks\.gsm8k: job oracle/Qwen1\.5-72B__Qwen1\.5-0\.5B cannot be "
                                          r"placed: model 'Qwen1\.5-72B'"):
        resources.job_gpus(config, pair_job("gsm8k", "oracle", "72B", "0.5B"))


def test_unknown_gpu_type_is_rejected():
    config = load_yaml_unique(REPO / "config" / "paper.yaml")
    config["resources"]["gpu_type"] = "v100"
    validate_schema(config, SCHEMA)
    fill_defaults(config, SCHEMA)
    with pytest.raises(ConfigError, match="resources.gpu_type: unknown card 'v100'; expected one of a100-80gb"):
        checks.validate_config(config, task_names=TASKS)


def test_slurm_plugin_pinned_to_the_profiles_series():
    from importlib.metadata import version

    from packaging.specifiers import SpecifierSet

    text = (REPO / "pyproject.toml").read_text()
    spec = SpecifierSet(re.search(r'"snakemake-executor-plugin-slurm([^"]*)"', text).group(1))
    profile = (REPO / "workflow" / "profiles" / "slurm" / "config.yaml").read_text()
    series = int(re.search(r"snakemake-executor-plugin-slurm >= (\d+)", profile).group(1))
    assert f"{series}.0" in spec and f"{series}.99" in spec
    assert f"{series - 1}.99" not in spec and f"{series + 1}.0" not in spec
    assert version("snakemake-executor-plugin-slurm") in spec


# ------------------------------------------------------------------ the published rows
def test_reference_rows_are_named_after_our_jobs():
    config = paper()
    reference = pd.read_csv(REPO / "config" / "reference" / "fsgen_paper_collaboration_frequency.csv")
    aligned = align_reference(config, reference)
    assert len(aligned) == len(reference) == 168
    for (_, before), (_, after) in zip(reference.iterrows(), aligned.iterrows()):
        chat = before["benchmark"] == "mtbench" and before["method"] != "proxy"
        suffix = "-Chat" if chat else ""
        assert after["large_model"] == before["large_model"] + suffix
        assert after["small_model"] == before["small_model"] + suffix
        assert after["collaboration_frequency"] == before["collaboration_frequency"]
    ours = {(j["variant"], j["benchmark"], j["large"], j["small"]) for j in jobs.decode_jobs(config)}
    rows = set(aligned[["method", "benchmark", "large_model", "small_model"]].itertuples(index=False, name=None))
    assert rows <= ours, sorted(rows - ours)[:5]  # every published row has a job of ours
