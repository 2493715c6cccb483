"""Preflight: each bad input is one line naming the config key and model/task; none pass silently."""

from __future__ import annotations

import copy
import json
import runpy
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest

from fsgen.pipeline.preflight import PreflightError, check_or_raise, model_problem, preflight

pytestmark = pytest.mark.timeout(120)

TASK_YAML = """
task: {name}
dataset_path: {dataset_path}
{dataset_kwargs}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
{extra}
metric_list:
  - metric: exact_match
"""


def write_task(folder: Path, name: str, data: Path | None = None, dataset_path: str = "json", extra: str = "") -> None:
    kwargs = f"dataset_kwargs:\n  data_files:\n    test: {data}" if data else ""
    (folder / f"{name}.yaml").write_text(TASK_YAML.format(name=name, dataset_path=dataset_path,
                                                          dataset_kwargs=kwargs, extra=extra))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Tiny models, an odd-tokenizer model, task YAMLs and data."""
    from fsgen.testing import build_model, build_tiny_family, build_tokenizer

    root = tmp_path_factory.mktemp("preflight")
    family = {k: str(v) for k, v in build_tiny_family(root / "family").items()}
    odd_tok = build_tokenizer(root / "odd_tok", vocab_size=300, corpus=["completely different text, other merges entirely"] * 50)
    family["odd"] = str(build_model(root / "odd", odd_tok))
    tasks = root / "tasks"
    tasks.mkdir()
    data = root / "test.jsonl"
    data.write_text('{"question": "1+1", "answer": "2"}\n')
    write_task(tasks, "pf_echo", data)
    write_task(tasks, "pf_code", data, extra="unsafe_code: true")
    write_task(tasks, "pf_hub", dataset_path="pf-org/pf-dataset")
    from fsgen.harness.tasks import write_task_overrides

    # what rule task_overrides does: the derived pf_echo__local task reading the local data
    write_task_overrides({"echo": {"task": "pf_echo", "data": {"path": str(data)}}}, tasks, tasks_dir=tasks)
    return SimpleNamespace(root=root, family=family, tasks=str(tasks), data=str(data))


def good_config(world) -> dict:
    f = world.family
    return {
        "models": {
            "large": {"path": f["large"], "params": 2e6},
            "small": {"path": f["small"], "params": 1e6, "tuned": "small-tuned"},
            "small-tuned": {"path": f["small_tuned"], "params": 1e6},
        },
        "pairs": [["large", "small"]],
        "methods": {"proxy": {"method": "proxy"}, "oracle": {"method": "oracle", "routers": ["entropy:0.5"]}},
        "benchmarks": {"echo": {"task": "pf_echo", "data": {"path": world.data}, "allow_code_execution": False}},
    }


def run(config, world, **kwargs):
    return preflight(config, include_path=world.tasks, include_defaults=False, **kwargs)


def test_a_good_config_passes(world):
    assert run(good_config(world), world) == []
    check_or_raise(good_config(world), include_path=world.tasks, include_defaults=False)


def break_missing_folder(c, w):
    c["models"]["large"]["path"] = str(w.root / "nowhere" / "large")


def break_no_config_json(c, w):
    folder = w.root / "no_config"
    if not folder.exists():
        shutil.copytree(w.family["large"], folder)
        (folder / "config.json").unlink()
    c["models"]["large"]["path"] = str(folder)


def break_no_weights(c, w):
    folder = w.root / "no_weights"
    if not folder.exists():
        shutil.copytree(w.family["large"], folder)
        for f in folder.glob("*.safetensors"):
            f.unlink()
    c["models"]["large"]["path"] = str(folder)


def break_tokenizer(c, w):
    c["models"]["small"]["path"] = w.family["odd"]


def break_proxy_without_tuned(c, w):
    c["models"]["small"]["tuned"] = None


def break_tuned_unknown(c, w):
    c["models"]["small"]["tuned"] = "ghost"


def break_pair_unknown(c, w):
    c["pairs"] = [["large", "medium"], ["large", "small"]]


def break_unknown_task(c, w):
    c["benchmarks"]["echo"]["task"] = "pf_no_such_task"


def break_missing_data(c, w):
    c["benchmarks"]["echo"]["data"] = {"path": str(w.root / "missing.jsonl")}


def break_empty_data(c, w):
    empty = w.root / "empty.jsonl"
    empty.write_text("")
    c["benchmarks"]["echo"]["data"] = {"path": str(empty)}


def break_code_without_opt_in(c, w):
    c["benchmarks"]["code"] = {"task": "pf_code", "allow_code_execution": False}


def break_learned_router(c, w):
    c["methods"]["oracle"]["routers"] = ["entropy:0.5", f"learned:{w.root / 'router.joblib'}"]


FAULTS = [
    (break_missing_folder, "models.large.path:", "does not exist"),
    (break_no_config_json, "models.large.path:", "no config.json"),
    (break_no_weights, "models.large.path:", "no weight files"),
    (break_tokenizer, "pairs.large__small:", "tokenizers differ"),
    (break_proxy_without_tuned, "models.small.tuned:", "proxy tuning of pair large__small"),
    (break_tuned_unknown, "models.small.tuned:", "'ghost' has no entry"),
    (break_pair_unknown, "pairs.large__medium:", "'medium' has no entry"),
    (break_unknown_task, "benchmarks.echo.task:", "'pf_no_such_task' not found"),
    (break_missing_data, "benchmarks.echo.data.path:", "does not exist (task 'pf_echo')"),
    (break_empty_data, "benchmarks.echo.data.path:", "is empty"),
    (break_code_without_opt_in, "benchmarks.code.allow_code_execution:", "'pf_code' scores by executing"),
    (break_learned_router, "methods.oracle.router:", "router.joblib"),
]


@pytest.mark.parametrize("fault,key,message", FAULTS, ids=[f[0].__name__[6:] for f in FAULTS])
def test_each_fault_is_one_line_naming_key_and_culprit(world, fault, key, message):
    config = copy.deepcopy(good_config(world))
    fault(config, world)
    problems = run(config, world)
    assert len(problems) == 1, problems
    assert problems[0].startswith(key) and message in problems[0], problems[0]
    assert "\n" not in problems[0]


def test_all_problems_are_reported_together(world):
    config = copy.deepcopy(good_config(world))
    for fault in (break_missing_folder, break_unknown_task, break_learned_router, break_code_without_opt_in):
        fault(config, world)
    with pytest.raises(PreflightError) as err:
        check_or_raise(config, include_path=world.tasks, include_defaults=False)
    lines = str(err.value).splitlines()
    assert "4 problem(s); nothing was decoded" in lines[0] and len(lines) == 5


def test_code_execution_with_opt_in_passes(world):
    config = good_config(world)
    config["benchmarks"]["code"] = {"task": "pf_code", "allow_code_execution": True}
    assert run(config, world) == []


def test_padded_vocabulary_is_not_a_mismatch(world):
    from transformers import AutoConfig

    large, small = (AutoConfig.from_pretrained(world.family[r]) for r in ("large", "small"))
    assert large.vocab_size != small.vocab_size  # large's embedding matrix is padded
    assert run(good_config(world), world) == []


def test_hub_models_and_datasets_offline(world, tmp_path, monkeypatch):
    import huggingface_hub.constants as hf

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hf, "HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    assert "not in the offline cache" in model_problem("pf-org/pf-model")
    snapshot = tmp_path / "hub" / "models--pf-org--pf-model" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "hub" / "models--pf-org--pf-model" / "refs").mkdir()
    (tmp_path / "hub" / "models--pf-org--pf-model" / "refs" / "main").write_text("a" * 40)
    assert model_problem("pf-org/pf-model") is None

    config = good_config(world)
    config["benchmarks"] = {"hubbed": {"task": "pf_hub"}}
    problems = run(config, world)
    assert len(problems) == 1 and problems[0].startswith("benchmarks.hubbed.task:")
    assert "'pf-org/pf-dataset' is not in the offline cache" in problems[0]
    (tmp_path / "datasets" / "pf-org___pf-dataset").mkdir(parents=True)
    assert run(config, world) == []


class Params(SimpleNamespace):
    pass


def run_script(world, tmp_path, config):
    """scripts/preflight.py as the rule runs it: the whole config is snakemake.config, one benchmark."""
    out = tmp_path / "preflight" / "echo.json"
    (tmp_path / "preflight.log").unlink(missing_ok=True)
    fake = SimpleNamespace(
        config=config, params=Params(include_path=world.tasks), wildcards=SimpleNamespace(benchmark="echo"),
        output=[str(out)], log=[str(tmp_path / "preflight.log")], input=[],
    )
    script = Path(__file__).resolve().parents[1] / "scripts" / "preflight.py"
    runpy.run_path(str(script), init_globals={"snakemake": fake})
    return out


def test_script_writes_a_stamp_or_fails_with_every_problem(world, tmp_path, capsys):
    out = run_script(world, tmp_path, good_config(world))
    stamp = json.loads(out.read_text())
    assert stamp["ok"] and set(stamp["models"]) == {"large", "small", "small-tuned"}
    out.unlink()
    bad = copy.deepcopy(good_config(world))
    break_missing_folder(bad, world)
    break_missing_data(bad, world)
    with pytest.raises(SystemExit) as exit_:
        run_script(world, tmp_path, bad)
    assert exit_.value.code == 1 and not out.exists()
    err = capsys.readouterr().err
    assert "models.large.path:" in err and "benchmarks.echo.data.path:" in err
    assert "models.large.path:" in (tmp_path / "preflight.log").read_text()
