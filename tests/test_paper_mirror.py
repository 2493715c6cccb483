"""Model and data mirrors (fsgen.pipeline.mirror): a config written with hub ids and hub datasets
runs from local folders (`--config model_mirror=DIR data_mirror=DIR`); whatever is missing is an
error naming the model or benchmark; `--config reference=null` (and the mirrors' null) mean none."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from fsgen.harness.tasks import TASKS_DIR
from fsgen.pipeline import jobs
from fsgen.pipeline.checks import load_and_check
from fsgen.pipeline.config import ConfigError, load_yaml_unique
from fsgen.pipeline.mirror import apply_mirrors
from test_workflow_support import REPO

SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
PAPER_DATA = REPO / "tests" / "data" / "paper_mirror"


def paper_raw() -> dict:
    return load_yaml_unique(REPO / "config" / "paper.yaml")


@pytest.fixture()
def model_mirror(tmp_path) -> Path:
    """Empty model folders under their hub ids (what the DAG build checks; preflight checks the rest)."""
    for name, model in paper_raw()["models"].items():
        (tmp_path / "models" / model["path"]).mkdir(parents=True)
    return tmp_path / "models"


def check(config: dict, monkeypatch, tmp_path) -> dict:
    monkeypatch.chdir(REPO)  # as Snakemake runs: relative paths (reference) from the repository root
    return load_and_check(config, SCHEMA, task_include_paths=[TASKS_DIR])


def test_hub_ids_read_from_the_model_mirror(model_mirror, monkeypatch, tmp_path):
    config = check({**paper_raw(), "model_mirror": str(model_mirror)}, monkeypatch, tmp_path)
    assert config["models"]["Qwen1.5-0.5B"]["path"] == str(model_mirror / "Qwen" / "Qwen1.5-0.5B")
    assert config["models"]["Qwen1.5-72B-Chat"]["path"] == str(model_mirror / "Qwen" / "Qwen1.5-72B-Chat")
    assert jobs.hub_models(config) == []  # nothing left for `snakemake fetch` to download
    again = apply_mirrors({**config, "models": {k: dict(v) for k, v in config["models"].items()}})
    assert again["models"] == config["models"]  # idempotent: the report re-reads the effective config


def test_a_model_missing_from_the_mirror_is_named(model_mirror, monkeypatch, tmp_path):
    shutil.rmtree(model_mirror / "Qwen" / "Qwen1.5-32B-Chat")
    with pytest.raises(ConfigError, match=r"models\.Qwen1\.5-32B-Chat\.path: hub id 'Qwen/Qwen1\.5-32B-Chat' is not "
                                          r"in model_mirror"):
        check({**paper_raw(), "model_mirror": str(model_mirror)}, monkeypatch, tmp_path)
    with pytest.raises(ConfigError, match=r"model_mirror: folder '.*nowhere' does not exist"):
        check({**paper_raw(), "model_mirror": str(tmp_path / "nowhere")}, monkeypatch, tmp_path)


def test_local_and_trained_models_are_left_alone(model_mirror, monkeypatch, tmp_path):
    config = load_yaml_unique(REPO / "config" / "config.yaml")  # the demo: every model trained here
    paths = {n: m["path"] for n, m in config["models"].items()}
    checked = check({**config, "model_mirror": str(model_mirror)}, monkeypatch, tmp_path)
    assert {n: m["path"] for n, m in checked["models"].items()} == paths


def test_benchmark_documents_from_the_data_mirror(monkeypatch, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(PAPER_DATA, data)
    (data / "gsm8k.fewshot.jsonl").write_text((data / "gsm8k.jsonl").read_text())
    config = check({**paper_raw(), "data_mirror": str(data)}, monkeypatch, tmp_path)
    assert config["benchmarks"]["mbpp"]["data"] == {"path": str(data / "mbpp.jsonl"), "split": "test"}
    assert config["benchmarks"]["gsm8k"]["data"] == {
        "path": str(data / "gsm8k.jsonl"), "split": "test",
        "fewshot_path": str(data / "gsm8k.fewshot.jsonl"), "fewshot_split": "train"}
    # a benchmark's own data wins; a missing file names the benchmark
    own = {**paper_raw(), "data_mirror": str(data)}
    own["benchmarks"]["mtbench"]["data"] = {"path": str(data / "mtbench.jsonl"), "split": "train"}
    (data / "mmlu_stem.jsonl").unlink()
    with pytest.raises(ConfigError, match=r"benchmarks\.mmlu_stem\.data: data_mirror '.*' has no documents"):
        check(own, monkeypatch, tmp_path)
    (data / "mmlu_stem.parquet").write_bytes(b"PAR1")  # any supported format counts
    assert check(own, monkeypatch, tmp_path)["benchmarks"]["mtbench"]["data"]["split"] == "train"


@pytest.mark.parametrize("word", ["null", "None", "~", ""])
def test_null_words_from_the_command_line_mean_none(word, monkeypatch, tmp_path):
    """`--config reference=null` arrives as the string "null"; YAML null is None already."""
    config = check({**paper_raw(), "reference": word, "model_mirror": word, "data_mirror": word}, monkeypatch, tmp_path)
    assert config["reference"] is None and config["model_mirror"] is None and config["data_mirror"] is None
    assert check({**paper_raw(), "reference": None}, monkeypatch, tmp_path)["reference"] is None


def test_the_shipped_reference_is_inside_the_project(monkeypatch, tmp_path):
    """Issue #12 item 1: paper.yaml's reference resolves from the repository root, not ../shared."""
    reference = Path(paper_raw()["reference"])
    assert not reference.is_absolute() and ".." not in reference.parts
    assert (REPO / reference).is_file()
