"""How long a decode job takes on a GPU (docs/slurm.md, "Expected GPU-hours"): a throughput model
calibrated on one measured run, and the SLURM time limit of each attempt.

Decoding is bound by reading memory: a decode step costs a fixed time per layer plus reading the
weights and the KV cache at a share of the card's bandwidth; a prefill costs 2 FLOPs per
parameter and token at a share of its FLOP/s. Pure arithmetic over `ModelSpec`s (no torch).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from fsgen.decoding.placement import ModelSpec

MAX_RUNTIME_MIN = 24 * 60  # config `max_runtime` default: common partition limit; no retry asks for more

@dataclass(frozen=True)
class GpuModel:
    name: str
    memory_gb: float  # GiB, as nvidia-smi's total / 1024
    bandwidth: float  # HBM bytes/s (datasheet)
    flops: float  # dense bfloat16 FLOP/s (datasheet)


GPU_MODELS = {
    "a100-80gb": GpuModel("A100 SXM 80GB", 80, 2.039e12, 312e12),
    "h100-80gb": GpuModel("H100 SXM 80GB", 80, 3.35e12, 989e12),
    "h200": GpuModel("H200 141GB", 141, 4.8e12, 989e12),
}
BANDWIDTH_EFFICIENCY = 0.7  # share of datasheet bandwidth a decode step reaches (assumption)
MFU = 0.4  # share of datasheet FLOP/s a prefill reaches (assumption)
LOAD_BYTES_PER_S = 1e9  # reading weights from the shared filesystem (assumption)
# Calibration, docs/bench.md "GPU results": on one H200 in bfloat16, HF generate of a 12-layer,
# 504.4M-parameter model took 0.600 s for 64 new tokens at batch 8. Reading its weights takes
# 0.30 ms per step; the rest is a fixed cost per layer (kernel launches, Python): 0.76 ms.
BENCH_STEP_S, BENCH_LAYERS, BENCH_WEIGHT_BYTES = 0.600 / 64, 12, 504.4e6 * 2
LAYER_OVERHEAD_S = (BENCH_STEP_S - BENCH_WEIGHT_BYTES / (GPU_MODELS["h200"].bandwidth * BANDWIDTH_EFFICIENCY)) / BENCH_LAYERS


def step_seconds(spec: ModelSpec, gpu: GpuModel, batch_size: int, context_tokens: int) -> float:
    """One decode step (a token per row): per-layer fixed cost + reading the weights and the KV cache."""
    read = spec.weight_bytes + spec.kv_bytes(batch_size, context_tokens) * spec.num_hidden_layers
    return spec.num_hidden_layers * LAYER_OVERHEAD_S + read / (gpu.bandwidth * BANDWIDTH_EFFICIENCY)


def prefill_seconds(spec: ModelSpec, gpu: GpuModel, batch_size: int, tokens: int) -> float:
    """One forward over `tokens` tokens per row: 2 FLOPs per parameter and token, at MFU."""
    return spec.num_hidden_layers * LAYER_OVERHEAD_S + 2 * spec.params * batch_size * tokens / (gpu.flops * MFU)


def decode_seconds(models: Mapping[str, ModelSpec], method: str, *, gpu: GpuModel, documents: int, batch_size: int,
                   prompt_tokens: int, max_new_tokens: int, system2: str = "large", draft_k: int = 5,
                   collaboration: float = 0.2) -> float:
    """Expected wall time of a decode job: loading + batches x (prefills + decode steps).

    Every batch runs `max_new_tokens` steps (its longest row; an upper bound when stop strings end
    rows early); the context is the prompt + half the new tokens on average. single: System 2
    alone. oracle: System 2 generates, each other model scores the whole sequence in one forward.
    speculative: rounds of `draft_k` System 1 steps and one System 2 verification, a round yielding
    (1 - p^(k+1)) / (1 - p) tokens with p = 1 - collaboration. Any other method (contrastive,
    proxy, routers): every model steps at every token.
    """
    large = models[system2] if system2 in models else next(iter(models.values()))
    others = [spec for spec in models.values() if spec is not large]
    context = prompt_tokens + max_new_tokens // 2
    step = lambda spec: step_seconds(spec, gpu, batch_size, context)  # noqa: E731
    prefill = sum(prefill_seconds(s, gpu, batch_size, prompt_tokens) for s in models.values())
    if method == "single" or not others:
        per_batch = prefill + max_new_tokens * step(large)
    elif method == "oracle":
        per_batch = (prefill_seconds(large, gpu, batch_size, prompt_tokens) + max_new_tokens * step(large)
                     + sum(prefill_seconds(s, gpu, batch_size, prompt_tokens + max_new_tokens) for s in others))
    elif method == "speculative":
        agree = 1.0 - collaboration
        rounds = max_new_tokens * (1 - agree) / (1 - agree ** (draft_k + 1))
        per_batch = prefill + rounds * (step(large) + draft_k * sum(step(s) for s in others))
    else:
        per_batch = prefill + max_new_tokens * sum(step(s) for s in models.values())
    load = sum(s.weight_bytes for s in models.values()) / LOAD_BYTES_PER_S
    return load + math.ceil(documents / batch_size) * per_batch


def runtime_minutes(seconds: float, attempt: int = 1, *, growth: float = 1.5, safety: float = 2.0,
                    startup_min: float = 5.0, max_minutes: int = MAX_RUNTIME_MIN) -> int:
    """SLURM time limit of an attempt: startup + safety x the estimate, x growth per retry, and
    never above `max_minutes` (a partition's limit: sbatch refuses a longer request)."""
    minutes = startup_min + seconds * safety * growth ** (attempt - 1) / 60
    return int(min(max_minutes, math.ceil(minutes)))
