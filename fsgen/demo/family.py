"""The default demo family: four sizes of one Llama architecture and their tuned variants.

Sizes and step counts were chosen with fsgen/demo/evaluate.py sweeps (docs/demo.md): every
model learns the answer format and copying, larger models compute the digits more often, and
the whole family trains in a few CPU minutes. Larger models get more steps (compute grows with
size, as in a compute-scaled family); the small ones have plateaued by then.
"""

from __future__ import annotations

from fsgen.demo.train import ModelSpec, TunedSpec, finetune_tuned, train_model

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


def train_member(name, train_jsonl, tuned_jsonl, tokenizer_dir, out_dir, base_dir=None, seed=0, threads=1,
                 progress=True) -> dict:
    """Train family member `name` (a tuned variant when its spec is a TunedSpec); returns its sidecar."""
    spec = spec_for(name, base=None if base_dir is None else str(base_dir))
    if isinstance(spec, TunedSpec):
        if base_dir is None:
            raise ValueError(f"{name} is a tuned variant of {spec.base}: its base model folder is needed")
        return finetune_tuned(spec, base_dir, tuned_jsonl, out_dir, seed=seed, name=name, threads=threads,
                              progress=progress)
    return train_model(spec, train_jsonl, tokenizer_dir, out_dir, seed=seed, name=name, threads=threads,
                       progress=progress)
