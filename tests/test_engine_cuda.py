"""The engine on a GPU (skipped without CUDA): devices, dtypes and batch independence there."""

from __future__ import annotations

import pytest
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_systems, method_logprobs
from fsgen.testing import build_tiny_family

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

PROMPTS = ["Tom has 3 apples. He buys 4 more.", "Q", "def add(a, b):\n    return", "",
           "The quick brown fox jumps over the lazy dog. " * 4, "12 - 5 =", "Small models write", "A box"]
RUNS = [("single:small", "always"), ("single:large", "always"), ("oracle", "always"), ("oracle", "threshold:0.08"),
        ("contrastive", "margin:0.03"), ("proxy", "entropy:3.3"), ("speculative", "always")]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


def load(family, **kw):
    return load_systems("proxy", small=str(family["small"]), large=str(family["large"]), small_tuned=str(family["small_tuned"]), **kw)


@pytest.fixture(scope="module")
def cuda32(family):
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    return load(family, device="cuda", dtype="float32")


@pytest.mark.parametrize("method,router", RUNS)
def test_cuda_batch_equals_one_by_one_and_cpu(family, cuda32, method, router):
    method, _, role = method.partition(":")  # single:<role>: that model alone
    gpu, cpu_systems = cuda32, load(family)
    if role:
        gpu, cpu_systems = gpu.alone(role), cpu_systems.alone(role)
    config = dict(method=method, router=router, max_new_tokens=10, top_k=3, progress=False)
    batched = decode(gpu, PROMPTS, DecodeConfig(batch_size=8, **config))
    alone = decode(gpu, PROMPTS, DecodeConfig(batch_size=1, **config))
    assert batched.generations == alone.generations
    assert (batched.trace["s1_top1_prob"] - alone.trace["s1_top1_prob"]).abs().max() < 1e-4
    cpu = decode(cpu_systems, PROMPTS, DecodeConfig(batch_size=8, **config))
    assert [g["token_ids"] for g in cpu.generations] == [g["token_ids"] for g in batched.generations]


def test_cuda_oracle_fast_path_equals_step_loop(cuda32):
    fast = decode(cuda32, PROMPTS, DecodeConfig(method="oracle", max_new_tokens=10, progress=False))
    loop = decode(cuda32, PROMPTS, DecodeConfig(method="oracle", router="threshold:1.01", max_new_tokens=10,
                                                progress=False))
    assert fast.generations == loop.generations


@pytest.mark.parametrize("dtype,device", [("bfloat16", "cuda"), ("float16", "cuda"), ("float32", "auto")])
def test_cuda_dtypes_and_device_map(family, dtype, device):
    systems = load(family, device=device, dtype=dtype)
    for method in ("oracle", "contrastive", "proxy"):
        result = decode(systems, PROMPTS, DecodeConfig(method=method, router="threshold:0.1", max_new_tokens=6,
                                                       progress=False))
        assert all(0 <= t < systems.vocab_size for g in result.generations for t in g["token_ids"])
        assert result.trace["s1_top1_prob"].between(0, 1).all()
        ids = torch.tensor([[5, 6, 7, 8]])
        lp = method_logprobs(systems, DecodeConfig(method=method), ids, torch.ones_like(ids))
        assert lp.shape == (1, 4, systems.vocab_size) and torch.isfinite(lp.logsumexp(-1)).all()
