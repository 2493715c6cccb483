"""A decode job with CUDA loads every model with the placement planner's device map over exactly
the visible GPUs, logs the plan and caps its batch size by it; CPU jobs are unchanged. Run on the
CPU: CUDA's device count and memory are stand-ins, and the maps are moved onto "cpu" to load."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from fsgen.decoding import placement as pl
from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_job_systems, load_systems
from fsgen.testing import build_tiny_family

torch.set_num_threads(1)
GIB = 1 << 30
CARD_GB = 0.0015  # two stand-in cards this small: the large model needs both, batch size 3 of 8
PROMPT, NEW, CAP = 64, 32, 8


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.fixture()
def two_gpus(monkeypatch):
    """CUDA as a 2-GPU job sees it; from_pretrained records its kwargs and loads the map onto the CPU."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=int(CARD_GB * GIB)))
    monkeypatch.setattr(pl, "CUDA_CONTEXT_BYTES", 0)
    received = {}
    real = AutoModelForCausalLM.from_pretrained

    def from_pretrained(path, **kwargs):
        if "device_map" not in kwargs:  # a reference loaded the plain way
            return real(path, **kwargs)
        received[str(path)] = kwargs
        model = real(path, **{**kwargs, "device_map": {module: "cpu" for module in kwargs["device_map"]}})
        model.to = lambda *a, **k: pytest.fail(".to() after loading with a device map")
        return model

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    return received


def spec_from_file(path, dtype="float32") -> pl.ModelSpec:
    return pl.ModelSpec.from_hf_config(str(path), json.loads((path / "config.json").read_text()), dtype=dtype)


def test_cuda_job_loads_every_model_with_the_planners_map(family, two_gpus, caplog):
    expected = pl.plan_placement({"large": spec_from_file(family["large"]), "small": spec_from_file(family["small"])},
                                 n_gpus=2, gpu_memory_gb=CARD_GB, batch_cap=CAP, prompt_tokens=PROMPT,
                                 max_new_tokens=NEW, system2="large")
    assert expected.models["large"].gpus == (0, 1) and 1 <= expected.batch_size < CAP  # the test means something
    with caplog.at_level(logging.INFO, logger="fsgen.decoding.engine"):
        systems, batch = load_job_systems("oracle", dtype="float32", batch_size=CAP, max_new_tokens=NEW,
                                          prompt_tokens=PROMPT, small=str(family["small"]), large=str(family["large"]))
    assert batch == expected.batch_size
    for role in ("small", "large"):
        kwargs = two_gpus[str(family[role])]
        assert kwargs["device_map"] == expected.models[role].device_map and kwargs["dtype"] == torch.float32
        assert set(kwargs["device_map"].values()) <= {0, 1}  # only the visible GPUs
    assert expected.text() in caplog.text  # the plan goes to the job's log
    del systems.models["large"].to, systems.models["small"].to
    result = decode(systems, ["Tom has 3 apples."], DecodeConfig(method="oracle", max_new_tokens=4, progress=False))
    reference = decode(load_systems("oracle", small=str(family["small"]), large=str(family["large"])),
                       ["Tom has 3 apples."], DecodeConfig(method="oracle", max_new_tokens=4, progress=False))
    assert result.generations[0]["token_ids"] == reference.generations[0]["token_ids"]


def test_single_model_jobs_place_their_one_role(family, two_gpus):
    systems, batch = load_job_systems("single", dtype="float32", batch_size=CAP, max_new_tokens=NEW,
                                      prompt_tokens=PROMPT, model=str(family["large"]))
    assert pl.system2_role("single") == "model" and pl.system2_role("proxy") == "large"
    assert list(systems.models) == ["model"] and two_gpus[str(family["large"])]["device_map"]
    assert 1 <= batch <= CAP


def test_a_pair_plan_needs_its_system2_role(family):
    specs = {"small": spec_from_file(family["small"]), "model": spec_from_file(family["large"])}
    with pytest.raises(pl.PlacementError, match="System 2 role 'large' is not among"):
        pl.plan_placement(specs, n_gpus=2, gpu_memory_gb=1, batch_cap=1, prompt_tokens=PROMPT, max_new_tokens=NEW)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU path")
def test_cpu_job_is_unchanged(family, monkeypatch):
    def from_pretrained(path, **kwargs):
        assert "device_map" not in kwargs
        return real(path, **kwargs)

    real = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", from_pretrained)
    systems, batch = load_job_systems("oracle", dtype="float32", batch_size=CAP, max_new_tokens=NEW,
                                      prompt_tokens=PROMPT, small=str(family["small"]), large=str(family["large"]))
    assert batch == CAP and all(next(m.parameters()).device.type == "cpu" for m in systems.models.values())
