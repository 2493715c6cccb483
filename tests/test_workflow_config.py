"""fsgen.workflow: config validation and expansion, as pure functions (no Snakemake run)."""

from __future__ import annotations


import pytest

from fsgen import workflow as fw
from test_workflow_support import BAD_CONFIGS, REPO, bad_config_text

SCHEMA = fw.load_yaml_unique(REPO / "workflow" / "schemas" / "config.schema.yaml")
TASKS = {"arith", "gsm8k_cot", "mmlu_stem_cot", "mbpp_local", "mtbench_first_turn"}


def checked(config: dict) -> dict:
    fw.validate_schema(config, SCHEMA)
    fw.fill_defaults(config, SCHEMA)
    fw.validate_config(config, task_names=TASKS)
    return config


def load(name: str) -> dict:
    return checked(fw.load_yaml_unique(REPO / "config" / name))


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "paper.yaml"):
        load(name)


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_rejected_naming_the_key(case, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(bad_config_text(case))
    _, expected = BAD_CONFIGS[case]
    with pytest.raises(fw.ConfigError) as err:
        checked(fw.load_yaml_unique(path))
    assert expected in str(err.value)


def test_at_least_twelve_distinct_bad_configs():
    assert len(BAD_CONFIGS) >= 12


def test_schema_has_description_and_default_for_every_optional_key():
    def walk(schema, path):
        for key, sub in schema.get("properties", {}).items():
            assert "description" in sub, f"{path}.{key} lacks a description"
            required = key in schema.get("required", [])
            optional_without_default = not required and "default" not in sub
            # decode parameters default in fsgen.config.DecodeConfig (documented in the description)
            if optional_without_default and "methods" not in path:
                assert "default" in sub or "(default" in sub["description"], f"{path}.{key} lacks a default"
            yield from walk(sub, f"{path}.{key}")
        if isinstance(schema.get("additionalProperties"), dict):
            yield from walk(schema["additionalProperties"], f"{path}.<name>")
        for option in schema.get("oneOf", []):
            yield from walk(option, path)
        if isinstance(schema.get("items"), dict):
            yield from walk(schema["items"], f"{path}[]")
        yield path

    assert len(list(walk(SCHEMA, "config"))) > 20


def test_all_ordered_pairs_follow_params():
    cfg = load("config.yaml")
    pairs = fw.expand_pairs(cfg)
    assert len(pairs) == 6
    for large, small in pairs:
        assert cfg["models"][large]["params"] > cfg["models"][small]["params"]
    assert len(set(pairs)) == 6


def test_router_sweep_expands_into_named_instances():
    methods = fw.expand_methods(load("config.yaml"))
    assert {"oracle_entropy-entropy0.5", "oracle_entropy-entropy1.5"} <= set(methods)
    assert methods["oracle_entropy-entropy1.5"] == {"method": "oracle", "router": "entropy:1.5"}
    assert methods["speculative"]["k"] == 5 and methods["speculative"]["router"] == "always"


def test_paper_grid_job_counts_and_tuned_benchmark():
    cfg = load("paper.yaml")
    pairs = fw.expand_pairs(cfg)
    assert len(pairs) == 21
    jobs = fw.decode_jobs(cfg)
    # 3 base benchmarks x 4 methods + MT-Bench (chat models) x 3 methods (no proxy)
    assert len(jobs) == 21 * (3 * 4 + 3)
    mt = [j for j in jobs if j["benchmark"] == "mtbench"]
    assert all(j["large"].endswith("-Chat") and j["small"].endswith("-Chat") for j in mt)
    assert not any(j["method"] == "proxy" for j in mt)
    singles = fw.single_jobs(cfg)
    assert len(singles) == 7 * 4
    assert len({(s["benchmark"], s["model"]) for s in singles}) == len(singles)


def test_pair_gpus_sum_or_max():
    cfg = load("paper.yaml")
    assert fw.pair_gpus(cfg, "Qwen1.5-72B", "Qwen1.5-0.5B", "oracle") == 4  # max
    cfg["resources"]["pair_gpus"] = "sum"
    assert fw.pair_gpus(cfg, "Qwen1.5-72B", "Qwen1.5-32B", "oracle") == 6
    assert fw.pair_gpus(cfg, "Qwen1.5-72B", "Qwen1.5-32B", "proxy") == 8  # + 32B-Chat


def test_retry_shrinks_batch_and_grows_resources():
    assert [fw.attempt_batch_size(16, a) for a in (1, 2, 3, 6)] == [16, 8, 4, 1]
    assert [fw.grown(1000, a, 1.5) for a in (1, 2, 3)] == [1000, 1500, 2250]


def test_duplicate_keys_anywhere_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("methods:\n  oracle: {method: oracle}\n  oracle: {method: contrastive}\n")
    with pytest.raises(fw.ConfigError, match="oracle: duplicate key"):
        fw.load_yaml_unique(path)


def test_task_index_finds_builtin_and_project_tasks():
    names = fw.known_task_names([REPO / "workflow" / "tasks"])
    assert {"gsm8k_cot", "mbpp", "mmlu_stem_cot", "mtbench_first_turn"} <= names
    assert "arithmetic_nonexistent" not in names


# ---------------------------------------------------------------- the workflow profile
UNIVERSAL_PROFILE_KEYS = {"force-use-threads", "rerun-incomplete", "show-failed-logs", "printshellcmds"}


def test_workflow_profile_is_found_and_suits_every_run(monkeypatch):
    """Snakemake applies profiles/default (the root link to workflow/profiles) to every run, over
    any --profile: it must be found (else score/job_stats each start a new Snakemake process) and
    must not override what the SLURM profile sets."""
    from snakemake.cli import parse_args

    profile = fw.load_yaml_unique(REPO / "profiles" / "default" / "config.yaml")
    assert set(profile) <= UNIVERSAL_PROFILE_KEYS, set(profile) - UNIVERSAL_PROFILE_KEYS
    monkeypatch.chdir(REPO)
    _, local = parse_args(["--cores", "2"])
    assert local.force_use_threads and local.rerun_incomplete
    _, slurm = parse_args(["--profile", "workflow/profiles/slurm"])
    slurm_profile = fw.load_yaml_unique(REPO / "workflow" / "profiles" / "slurm" / "config.yaml")
    assert slurm.executor == "slurm" and slurm.force_use_threads
    assert slurm.retries == slurm_profile["retries"] and slurm.latency_wait == slurm_profile["latency-wait"]
