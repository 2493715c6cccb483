"""The default demo family: four sizes of one Llama architecture and their tuned variants.

Sizes and step counts were chosen with fsgen/demo/evaluate.py sweeps (docs/demo.md): every
model learns the answer format and copying, larger models compute the digits more often, and
the whole family trains in a few CPU minutes. Larger models get more steps (compute grows with
size, as in a compute-scaled family); the small ones have plateaued by then.
"""

from __future__ import annotations

from fsgen.demo.train import ModelSpec, TunedSpec

DEFAULT_FAMILY: dict[str, ModelSpec] = {
    "arith-xs": ModelSpec(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, steps=700, lr=3e-3),
    "arith-s": ModelSpec(hidden_size=48, num_layers=2, num_heads=3, steps=800, lr=5e-3),
    "arith-m": ModelSpec(hidden_size=64, num_layers=3, num_heads=4, steps=1000, lr=5e-3),
    "arith-l": ModelSpec(hidden_size=96, num_layers=4, num_heads=4, intermediate_size=336, steps=1000,
                         batch_size=32, micro_batches=2, lr=3e-3),
}

# Tuned variants: of the models that are ever the small model of a pair (for proxy tuning), and
# of the largest as proxy tuning's reference (the large model tuned directly on the same data).
DEFAULT_TUNED: dict[str, TunedSpec] = {
    f"{name}-tuned": TunedSpec(base=name) for name in ("arith-xs", "arith-s", "arith-m", "arith-l")
}


def spec_for(name: str, base: str | None = None) -> ModelSpec | TunedSpec:
    """The spec of a family member by name; an unknown `<base>-tuned` name gets TunedSpec defaults."""
    if name in DEFAULT_FAMILY:
        return DEFAULT_FAMILY[name]
    if name in DEFAULT_TUNED:
        return DEFAULT_TUNED[name]
    if base is not None:
        return TunedSpec(base=base)
    known = sorted(DEFAULT_FAMILY) + sorted(DEFAULT_TUNED)
    raise KeyError(f"no demo model spec named {name!r} (and no base given); known: {known}")
