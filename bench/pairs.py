"""Model pairs built locally (no downloads) whose small model agrees with the large one often.

Two independently initialised random models almost never agree on a next token, so speculative
decoding between them accepts nothing. Real families behave differently: a small model predicts
most of a large model's tokens. `build_related_pair` imitates that with one random Llama model
(System 2) and a copy of its first layers (System 1); the layers System 1 lacks have their
residual outputs scaled down (`tail_scale`), so they refine rather than replace the prediction,
and `tail_scale` sets how often the two agree.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from fsgen.testing import build_model


@torch.no_grad()
def build_related_pair(
    root: str | Path,
    tokenizer,
    hidden_size: int = 64,
    num_layers: int = 4,
    draft_layers: int = 2,  # System 1 = the first `draft_layers` layers of System 2
    tail_scale: float = 0.5,  # scale of the residual outputs of layers draft_layers..num_layers-1
    num_heads: int = 4,
    seed: int = 0,
    init_std: float = 0.3,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
) -> dict[str, Path]:
    """Write {"large", "small"} HF folders (with the tokenizer) under `root`; return their paths."""
    if not 0 < draft_layers < num_layers:
        raise ValueError(f"draft_layers must be in 1..{num_layers - 1}, got {draft_layers}")
    root = Path(root)
    large_dir = build_model(
        root / "large", tokenizer, hidden_size=hidden_size, num_layers=num_layers, num_heads=num_heads,
        seed=seed, init_std=init_std,
    )
    large = LlamaForCausalLM.from_pretrained(str(large_dir), dtype=dtype).to(device)
    for layer in large.model.layers[draft_layers:]:
        layer.self_attn.o_proj.weight.mul_(tail_scale)
        layer.mlp.down_proj.weight.mul_(tail_scale)
    large.save_pretrained(str(large_dir))
    small = copy.deepcopy(large)
    small.model.layers = small.model.layers[:draft_layers]
    small.config.num_hidden_layers = draft_layers
    if getattr(small.config, "layer_types", None):
        small.config.layer_types = small.config.layer_types[:draft_layers]
    small_dir = root / "small"
    small.save_pretrained(str(small_dir))
    tokenizer.save_pretrained(str(small_dir))
    return {"large": large_dir, "small": small_dir}
