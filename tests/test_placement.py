"""fsgen.decoding.placement: plans for the paper's largest jobs on 80 and 141 GiB cards (Qwen1.5's real
architectures, config/reference/qwen1.5_architectures.json), checked by accounting written here;
device maps that transformers loads; the job's GPUs, host memory and run-time guess."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from fsgen.decoding import placement as pl
from fsgen.decoding import runtime
from fsgen.testing import build_model, build_tokenizer

REPO = Path(__file__).resolve().parents[1]
ARCH = json.loads((REPO / "config" / "reference" / "qwen1.5_architectures.json").read_text())["models"]
PROMPT, NEW = 800, 512
GIB = 1 << 30


def hf_config(size: str) -> dict:
    return {**ARCH[f"Qwen1.5-{size}"], "model_type": "qwen2"}


def spec(size: str, name: str | None = None, **kw) -> pl.ModelSpec:
    return pl.ModelSpec.from_hf_config(name or f"Qwen1.5-{size}", hf_config(size), **kw)


def meta_model(size: str) -> torch.nn.Module:
    """The real architecture with no memory behind it (transformers' own module tree)."""
    config = Qwen2Config(**{k: v for k, v in hf_config(size).items() if k != "source"})
    with torch.device("meta"):
        return Qwen2ForCausalLM(config)


@pytest.mark.parametrize("size", ["0.5B", "1.8B", "4B", "7B", "14B", "32B", "72B"])
def test_parameter_count_equals_the_real_modules(size):
    model = meta_model(size)
    assert spec(size).params == sum(p.numel() for p in model.parameters())  # tied weights counted once


# ------------------------------------------------------------------ independent accounting

def module_bytes(size: str, module: str, batch: int) -> int:
    """Bytes of one device-map entry at bfloat16, from the architecture: weights (+ KV for a layer)."""
    c = hf_config(size)
    h, v, layers = c["hidden_size"], c["vocab_size"], c["num_hidden_layers"]
    if module == "model.embed_tokens":
        return 2 * v * h
    if module == "lm_head":
        return 0 if c["tie_word_embeddings"] else 2 * v * h
    if module == "model.norm":
        return 2 * h
    if module == "model.rotary_emb":
        return 0
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    weights = h * h + 2 * h * kv + h * h + h + 2 * kv + 3 * h * c["intermediate_size"] + 2 * h
    cache = 2 * kv * (PROMPT + NEW) * batch  # K and V for every row and token
    return 2 * (weights + cache)


def per_gpu_bytes(plan: pl.Placement, sizes: dict[str, str]) -> dict[int, int]:
    """Weights + KV per GPU from the device maps, plus the largest transient of the models there."""
    total, transient = {}, {}
    for role, model in plan.models.items():
        for module, gpu in model.device_map.items():
            total[gpu] = total.get(gpu, 0) + module_bytes(sizes[role], module, plan.batch_size)
        for gpu in model.gpus:
            transient[gpu] = max(transient.get(gpu, 0), model.transient_bytes)
    return {gpu: total[gpu] + transient.get(gpu, 0) for gpu in total}


JOBS = {
    "72B+0.5B": {"large": "72B", "small": "0.5B"},
    "32B+14B": {"large": "32B", "small": "14B"},
    "proxy 72B+32B+32B-Chat": {"large": "72B", "small": "32B", "small_tuned": "32B"},
}


def specs_of(sizes: dict[str, str]) -> dict[str, pl.ModelSpec]:
    return {role: spec(size, f"Qwen1.5-{size}" + ("-Chat" if role == "small_tuned" else "")) for role, size in sizes.items()}


@pytest.mark.parametrize("card", [80, 141])
@pytest.mark.parametrize("job", sorted(JOBS))
def test_plan_fits_every_card_and_system2_gets_what_it_needs(job, card):
    sizes = JOBS[job]
    models = specs_of(sizes)
    n = pl.job_gpus(models, gpu_memory_gb=card, batch_cap=8, prompt_tokens=PROMPT, max_new_tokens=NEW)
    plan = pl.plan_placement(models, n_gpus=n, gpu_memory_gb=card, batch_cap=8, prompt_tokens=PROMPT,
                             max_new_tokens=NEW)
    assert plan.batch_size == 8
    for role, model in plan.models.items():
        meta_names = {name for name, _ in meta_model(sizes[role]).named_parameters()}
        assert all(any(p == k or p.startswith(k + ".") for k in model.device_map) for p in meta_names), role
        assert set(model.device_map.values()) <= set(range(n)), f"{role} placed beyond the job's {n} GPUs"
        layer_gpus = [model.device_map[f"model.layers.{i}"] for i in range(models[role].num_hidden_layers)]
        assert layer_gpus == sorted(layer_gpus, key=list(model.gpus).index)  # one pass through its GPUs
    used = per_gpu_bytes(plan, sizes)
    usable = card * GIB * (1 - pl.MARGIN) - pl.CUDA_CONTEXT_BYTES
    assert all(bytes_ <= usable < card * GIB for bytes_ in used.values()), (used, plan.text())
    assert [used.get(g, 0) for g in range(n)] == plan.used_bytes  # the plan's own accounting agrees
    large = plan.models["large"]
    need = sum(module_bytes(sizes["large"], m, 8) for m in large.device_map) + large.transient_bytes
    assert sum(large.max_memory.values()) >= need  # weights and the KV cache of all 8 rows, reserved
    assert large.transient_bytes >= 8 * NEW * models["large"].vocab_size * 4  # float32 log-probs at least
    # fewer GPUs would not run the batch cap
    if n > 1:
        try:
            fewer = pl.plan_placement(models, n_gpus=n - 1, gpu_memory_gb=card, batch_cap=8, prompt_tokens=PROMPT,
                                      max_new_tokens=NEW)
            assert fewer.batch_size < 8
        except pl.PlacementError:
            pass
    total_need = sum(module_bytes(sizes[r], m, 8) for r, model in plan.models.items() for m in model.device_map)
    assert n >= math.ceil(total_need / usable)


def test_system1_never_changes_where_system2_goes():
    """System 2's map and budgets are the same with and without System 1 beside it, also when
    System 1 has to use the room left on System 2's GPUs."""
    alone = pl.plan_placement({"large": spec("72B")}, n_gpus=3, gpu_memory_gb=80, batch_cap=4,
                              prompt_tokens=PROMPT, max_new_tokens=NEW)
    shared = pl.plan_placement({"large": spec("72B"), "small": spec("14B")}, n_gpus=3, gpu_memory_gb=80,
                               batch_cap=4, prompt_tokens=PROMPT, max_new_tokens=NEW)
    assert shared.batch_size == alone.batch_size == 4
    assert set(shared.models["small"].gpus) <= set(shared.models["large"].gpus)  # no GPU of its own left
    assert shared.models["large"].device_map == alone.models["large"].device_map
    assert shared.models["large"].max_memory == alone.models["large"].max_memory
    own = pl.plan_placement({"large": spec("72B"), "small": spec("0.5B")}, n_gpus=4, gpu_memory_gb=80,
                            batch_cap=8, prompt_tokens=PROMPT, max_new_tokens=NEW)
    assert not set(own.models["small"].gpus) & set(own.models["large"].gpus)  # a free GPU: its own


def test_batch_size_shrinks_as_the_token_budget_grows():
    models = {"large": spec("72B"), "small": spec("0.5B")}
    prompts = (300, 1500, 4000, 12000)
    batches = [pl.plan_placement(models, n_gpus=3, gpu_memory_gb=80, batch_cap=16, prompt_tokens=prompt,
                                 max_new_tokens=NEW).batch_size for prompt in prompts]
    assert batches == sorted(batches, reverse=True) and batches[0] == 16 and batches[-1] >= 1, batches
    # never more rows than the KV caches alone leave room for on 3 cards after the weights
    free = 3 * (80 * GIB * (1 - pl.MARGIN) - pl.CUDA_CONTEXT_BYTES) - 2 * (72_287_920_128 + 463_987_712)
    for prompt, batch in zip(prompts, batches):
        tokens = prompt + NEW
        kv_per_row = 2 * tokens * (80 * 2 * 64 * 128 + 24 * 2 * 16 * 64)  # bytes x (layers x (K, V) x kv heads x head dim)
        assert batch <= free // kv_per_row, (prompt, batch)


def test_a_model_that_cannot_fit_is_named():
    with pytest.raises(pl.PlacementError, match=r"'Qwen1\.5-72B' \(large\) does not fit"):
        pl.plan_placement({"large": spec("72B"), "small": spec("0.5B")}, n_gpus=1, gpu_memory_gb=80, batch_cap=8,
                          prompt_tokens=PROMPT, max_new_tokens=NEW)
    with pytest.raises(pl.PlacementError, match=r"'Qwen1\.5-32B-Chat' \(small_tuned\) does not fit"):
        pl.plan_placement(specs_of(JOBS["proxy 72B+32B+32B-Chat"]), n_gpus=3, gpu_memory_gb=80, batch_cap=8,
                          prompt_tokens=PROMPT, max_new_tokens=NEW)
    with pytest.raises(pl.PlacementError, match="'Qwen1.5-0.5B' .* 2 GPU"):  # gpus: 2 of its own, 1 left
        pl.plan_placement({"large": spec("72B", gpus=3), "small": spec("0.5B", gpus=2)}, n_gpus=4,
                          gpu_memory_gb=80, batch_cap=1, prompt_tokens=PROMPT, max_new_tokens=NEW)
    with pytest.raises(pl.PlacementError, match="'Qwen1.5-7B'.*'intermediate_size'"):
        pl.ModelSpec.from_hf_config("Qwen1.5-7B", {k: v for k, v in hf_config("7B").items() if k != "intermediate_size"})


def test_gpus_override_gives_a_model_its_own_gpus():
    models = {"large": spec("72B", gpus=3), "small": spec("0.5B")}
    plan = pl.plan_placement(models, n_gpus=4, gpu_memory_gb=80, batch_cap=8, prompt_tokens=PROMPT, max_new_tokens=NEW)
    assert plan.models["large"].gpus == (0, 1, 2) and plan.models["small"].gpus == (3,)
    assert pl.job_gpus(models, gpu_memory_gb=141, batch_cap=8, prompt_tokens=PROMPT, max_new_tokens=NEW) == 4
    assert pl.job_gpus({"large": spec("72B"), "small": spec("0.5B")}, gpu_memory_gb=141, batch_cap=8,
                       prompt_tokens=PROMPT, max_new_tokens=NEW) == 2


def test_plan_text_names_models_gpus_and_batch():
    plan = pl.plan_placement(specs_of(JOBS["32B+14B"]), n_gpus=2, gpu_memory_gb=80, batch_cap=8,
                             prompt_tokens=PROMPT, max_new_tokens=NEW)
    text = plan.text()
    assert "batch size 8 (cap 8)" in text and "Qwen1.5-32B on GPU 0" in text and "Qwen1.5-14B on GPU 1" in text
    assert "GPU 1:" in text and "layers 0-63 -> GPU 0" in text


# ------------------------------------------------------------------ the map loads in transformers

def cpu_map(device_map: dict) -> dict:
    return {module: "cpu" for module in device_map}


def check_loads_with(path: Path, monkeypatch) -> tuple[torch.nn.Module, dict]:
    config = json.loads((path / "config.json").read_text())
    model_spec = pl.ModelSpec.from_hf_config("tiny", config, dtype="float32")
    reference = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    assert model_spec.params == sum(p.numel() for p in reference.parameters())
    monkeypatch.setattr(pl, "CUDA_CONTEXT_BYTES", 0)
    card_gb = 0.6 * model_spec.weight_bytes / GIB / (1 - pl.MARGIN)  # 60% of the weights per "GPU"
    plan = pl.plan_placement({"large": model_spec}, n_gpus=2, gpu_memory_gb=card_gb, batch_cap=1, prompt_tokens=0,
                             max_new_tokens=0)
    device_map = plan.from_pretrained_kwargs("large")["device_map"]
    assert set(device_map.values()) == {0, 1}  # split over both
    modules = dict(reference.named_modules())
    assert set(device_map) <= set(modules)
    loaded = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32, device_map=cpu_map(device_map)).eval()
    ids = torch.tensor([[1, 5, 9, 3, 7]])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, reference(ids).logits, rtol=0, atol=0)
    return loaded, device_map


def test_device_map_loads_a_llama_model(tmp_path, monkeypatch):
    tokenizer = build_tokenizer(tmp_path / "tok")
    path = build_model(tmp_path / "llama", tokenizer, hidden_size=32, num_layers=4, num_heads=4)
    check_loads_with(path, monkeypatch)


def test_device_map_loads_a_qwen2_model_with_tied_embeddings(tmp_path, monkeypatch):
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=300, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    Qwen2ForCausalLM(config).save_pretrained(str(tmp_path / "qwen2"))
    loaded, device_map = check_loads_with(tmp_path / "qwen2", monkeypatch)
    assert device_map["lm_head"] == device_map["model.embed_tokens"]  # tied weights live on one GPU
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()


# ------------------------------------------------------------------ resources and run time

def test_host_memory_does_not_grow_with_streamed_weights():
    gpu_small = pl.host_memory_mb({"large": spec("0.5B")}, n_gpus=1)
    gpu_large = pl.host_memory_mb({"large": spec("72B"), "small": spec("0.5B")}, n_gpus=3)
    assert gpu_small == gpu_large < 32 * 1024
    cpu = pl.host_memory_mb({"large": spec("7B")}, n_gpus=0, batch_size=2, prompt_tokens=PROMPT, max_new_tokens=NEW)
    assert cpu * (1 << 20) > 2 * 7_721_324_544  # the weights live in host memory


def test_runtime_guess_grows_with_size_and_budget_and_never_exceeds_the_cap():
    gpu = runtime.GPU_MODELS["h100-80gb"]
    def seconds(large, new=NEW, method="oracle"):
        return runtime.decode_seconds({"large": spec(large), "small": spec("0.5B")}, method, gpu=gpu, documents=500,
                                 batch_size=8, prompt_tokens=PROMPT, max_new_tokens=new)
    assert seconds("7B") < seconds("32B") < seconds("72B")
    assert seconds("72B", new=256) < seconds("72B", new=512)
    assert seconds("72B", method="speculative") < seconds("72B", method="oracle") < seconds("72B", method="contrastive")
    first = runtime.runtime_minutes(seconds("72B"))
    assert runtime.runtime_minutes(seconds("72B"), attempt=2) > first
    assert all(runtime.runtime_minutes(seconds("72B") * 40, attempt=a) <= 24 * 60 for a in range(1, 6))
    assert runtime.runtime_minutes(1e9, attempt=3, max_minutes=600) == 600


def test_step_time_reproduces_its_calibration_run():
    """docs/bench.md: 0.600 s for 64 steps of a 12-layer, 504.4M-parameter model, batch 8, H200."""
    bench = pl.ModelSpec("bench", 504_400_000, num_hidden_layers=12, num_kv_heads=16, head_dim=128,
                         hidden_size=2048, intermediate_size=5632, vocab_size=32000)
    step = runtime.step_seconds(bench, runtime.GPU_MODELS["h200"], batch_size=8, context_tokens=0)
    assert step * 64 == pytest.approx(0.600, rel=1e-9)
