"""fsgen.pipeline: config validation and expansion, as pure functions (no Snakemake run)."""

from __future__ import annotations


import pytest

from fsgen.pipeline import checks, jobs, resources, task_index
from fsgen.pipeline.config import ConfigError, fill_defaults, load_yaml_unique, validate_schema
from test_workflow_support import BAD_CONFIGS, REPO, bad_config_text

SCHEMA = load_yaml_unique(REPO / "workflow" / "schemas" / "config.schema.yaml")
TASKS = {"arith", "gsm8k_cot", "mmlu_stem_cot", "mbpp_local", "mtbench_first_turn"}


def checked(config: dict) -> dict:
    validate_schema(config, SCHEMA)
    fill_defaults(config, SCHEMA)
    checks.validate_config(config, task_names=TASKS)
    return config


def load(name: str) -> dict:
    return checked(load_yaml_unique(REPO / "config" / name))


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "paper.yaml"):
        load(name)


@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config_is_rejected_naming_the_key(case, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(bad_config_text(case))
    _, expected = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as err:
        checked(load_yaml_unique(path))
    assert expected in str(err.value)


def test_every_config_section_has_a_distinct_bad_case():
    """Each required section of the schema and the top level have a bad case whose message names
    a key there, and no two cases are the same config (so each one tests something of its own)."""
    sections = {expected.split(":")[0].split(".")[0].split("[")[0] for _, expected in BAD_CONFIGS.values()}
    assert set(SCHEMA["required"]) | {"modles", "reference"} <= sections
    texts = [bad_config_text(case) for case in sorted(BAD_CONFIGS)]
    assert len(set(texts)) == len(texts)


def test_schema_has_description_and_default_for_every_optional_key():
    def walk(schema, path):
        for key, sub in schema.get("properties", {}).items():
            assert "description" in sub, f"{path}.{key} lacks a description"
            required = key in schema.get("required", [])
            optional_without_default = not required and "default" not in sub
            # decode parameters default in fsgen.decoding.config.DecodeConfig (documented in the description)
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
    pairs = jobs.expand_pairs(cfg)
    assert len(pairs) == 6
    for large, small in pairs:
        assert cfg["models"][large]["params"] > cfg["models"][small]["params"]
    assert len(set(pairs)) == 6


def test_router_sweep_expands_into_named_variants():
    variants = jobs.expand_variants(load("config.yaml"))
    assert {"oracle_entropy-entropy0.5", "oracle_entropy-entropy1.5"} <= set(variants)
    assert variants["oracle_entropy-entropy1.5"] == {"method": "oracle", "router": "entropy:1.5"}
    assert variants["speculative"]["k"] == 5 and variants["speculative"]["router"] == "always"


def test_paper_grid_job_counts_and_tuned_benchmark():
    cfg = load("paper.yaml")
    pairs = jobs.expand_pairs(cfg)
    assert len(pairs) == 21
    pair_jobs = jobs.decode_jobs(cfg)
    # 4 benchmarks x 4 methods; MT-Bench with the chat pairs, proxy tuning there with the base pair
    assert len(pair_jobs) == 21 * 4 * 4
    mt = [j for j in pair_jobs if j["benchmark"] == "mtbench"]
    assert all(j["large"].endswith("-Chat") and j["small"].endswith("-Chat") for j in mt if j["variant"] != "proxy")
    assert not any(j["large"].endswith("-Chat") for j in mt if j["variant"] == "proxy")
    singles = jobs.single_jobs(cfg)
    assert len(singles) == 7 * 3 + 14 + 6 * 3  # + the -Chat of every large model on the base benchmarks (proxy's reference)
    assert len({(s["benchmark"], s["model"]) for s in singles}) == len(singles)


def test_job_gpus_of_cpu_models_and_overrides():
    cfg = load("config.yaml")  # the demo: every model gpus: 0
    assert resources.job_gpus(cfg, {"benchmark": "arith", "variant": "proxy", "large": "arith-l", "small": "arith-xs"}) == 0
    cfg = load("paper.yaml")  # no config.json: weights pooled; an override counts on its own
    cfg["models"]["Qwen1.5-32B"]["gpus"] = 2
    job = {"benchmark": "gsm8k", "variant": "oracle", "large": "Qwen1.5-72B", "small": "Qwen1.5-32B"}
    assert resources.job_gpus(cfg, job) == 2 + 3
    assert resources.job_gpus(cfg, {"benchmark": "gsm8k", "model": "Qwen1.5-32B"}) == 2


def test_retry_shrinks_batch_and_grows_resources():
    assert [resources.attempt_batch_size(16, a) for a in (1, 2, 3, 6)] == [16, 8, 4, 1]
    assert [resources.grown(1000, a, 1.5) for a in (1, 2, 3)] == [1000, 1500, 2250]


def test_duplicate_keys_anywhere_are_rejected(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("methods:\n  oracle: {method: oracle}\n  oracle: {method: contrastive}\n")
    with pytest.raises(ConfigError, match="oracle: duplicate key"):
        load_yaml_unique(path)


def test_task_index_finds_builtin_and_project_tasks():
    names = task_index.known_task_names([REPO / "fsgen" / "harness" / "lm_eval_tasks"])
    assert {"gsm8k_cot", "mbpp", "mmlu_stem_cot", "mtbench_first_turn"} <= names
    assert "arithmetic_nonexistent" not in names


# ---------------------------------------------------------------- the workflow profile
UNIVERSAL_PROFILE_KEYS = {"force-use-threads", "rerun-incomplete", "show-failed-logs", "printshellcmds"}


def test_workflow_profile_is_found_and_suits_every_run(monkeypatch):
    """Snakemake applies profiles/default (the root link to workflow/profiles) to every run, over
    any --profile: it must be found (else score/job_stats each start a new Snakemake process) and
    must not override what the SLURM profile sets."""
    from snakemake.cli import parse_args

    profile = load_yaml_unique(REPO / "profiles" / "default" / "config.yaml")
    assert set(profile) <= UNIVERSAL_PROFILE_KEYS, set(profile) - UNIVERSAL_PROFILE_KEYS
    monkeypatch.chdir(REPO)
    _, local = parse_args(["--cores", "2"])
    assert local.force_use_threads and local.rerun_incomplete
    _, slurm = parse_args(["--profile", "workflow/profiles/slurm"])
    slurm_profile = load_yaml_unique(REPO / "workflow" / "profiles" / "slurm" / "config.yaml")
    assert slurm.executor == "slurm" and slurm.force_use_threads
    assert slurm.retries == slurm_profile["retries"] and slurm.latency_wait == slurm_profile["latency-wait"]
