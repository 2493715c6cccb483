"""Config of #13's jobs: `seeds:` sweeps (one variant per seed) and the counterfactual stage
(which jobs get one, `positions: 0` turns it off), as pure functions of the checked config."""

from __future__ import annotations

import copy

import pytest

from fsgen.pipeline import checks, jobs
from fsgen.pipeline.config import ConfigError, fill_defaults, load_yaml_unique, validate_schema
from test_workflow_support import REPO, demo_config

SCHEMA = load_yaml_unique(REPO / "workflow" / "schemas" / "config.schema.yaml")
TASKS = {"arith", "gsm8k_cot", "mmlu_stem_cot", "mbpp_local", "mtbench_first_turn"}


def checked(config: dict) -> dict:
    validate_schema(config, SCHEMA)
    fill_defaults(config, SCHEMA)
    checks.validate_config(config, task_names=TASKS)
    return config


def test_seeds_make_one_variant_per_seed():
    variants = jobs.expand_variants(checked(demo_config()))
    assert variants["speculative_sampled-seed0"] == {"method": "speculative", "k": 5, "temperature": 1.0,
                                                     "router": "always", "seed": 0}
    assert variants["speculative_sampled-seed1"]["seed"] == 1
    assert "speculative_sampled" not in variants
    assert "seed" not in variants["speculative"]  # greedy: the engine's default seed


def test_seed_variants_are_named_after_their_entry():
    cfg = {"methods": {"m": {"method": "speculative", "temperature": 0.7, "seeds": [3, 11]}}}
    assert set(jobs.expand_variants(cfg)) == {"m-seed3", "m-seed11"}


def test_seed_variant_names_round_trip():
    assert jobs.split_seed_variant(jobs.seed_variant("speculative_sampled", 12)) == ("speculative_sampled", 12)
    assert jobs.split_seed_variant("oracle_entropy-entropy0.5") == ("oracle_entropy-entropy0.5", None)
    assert jobs.split_seed_variant("a-seedling") == ("a-seedling", None)


@pytest.mark.parametrize("spec,message", [
    ({"method": "speculative", "temperature": 0.0, "seeds": [0, 1]}, "greedy"),
    ({"method": "oracle", "seeds": [0, 1]}, "greedy"),
])
def test_seeds_of_a_greedy_decode_are_an_error(spec, message):
    cfg = demo_config()
    cfg["methods"]["bad"] = spec
    with pytest.raises(ConfigError, match=r"methods\.bad\.seeds.*" + message):
        checked(cfg)


def test_repeated_seed_is_refused_by_the_schema():
    cfg = demo_config()
    cfg["methods"]["speculative_sampled"]["seeds"] = [1, 1]
    with pytest.raises(ConfigError, match="seeds"):
        checked(cfg)


def test_counterfactual_jobs_are_the_oracle_jobs_with_router_always():
    cfg = checked(demo_config())
    assert cfg["counterfactual"] == {"positions": 200, "seed": 0}
    assert jobs.counterfactual_variants(cfg) == ["oracle"]  # not the entropy-routed oracle variants
    chosen = jobs.counterfactual_jobs(cfg)
    assert len(chosen) == 6 and all(j["variant"] == "oracle" for j in chosen)
    assert chosen == [j for j in jobs.decode_jobs(cfg) if j["variant"] == "oracle"]


def test_positions_zero_turns_the_stage_off():
    cfg = demo_config()
    cfg["counterfactual"] = {"positions": 0}
    assert jobs.counterfactual_jobs(checked(cfg)) == []


def test_counterfactual_defaults_and_bad_values():
    cfg = demo_config()
    del cfg["counterfactual"]
    assert checked(cfg)["counterfactual"] == {"positions": 200, "seed": 0}
    for bad in ({"positions": -1}, {"position": 5}):
        cfg = copy.deepcopy(demo_config())
        cfg["counterfactual"] = bad
        with pytest.raises(ConfigError, match="counterfactual"):
            checked(cfg)


def test_paper_grid_has_a_counterfactual_job_per_oracle_job():
    cfg = checked(load_yaml_unique(REPO / "config" / "paper.yaml"))
    chosen = jobs.counterfactual_jobs(cfg)
    assert len(chosen) == 21 * 4  # every pair on GSM8K, MMLU-STEM, MBPP and MT-Bench (skipped at run time)
