"""The embedded demo: the "arith" benchmark and a family of tiny Llama models trained on it.

    from fsgen.demo import write_splits, train_tokenizer, train_model, finetune_tuned, DEFAULT_FAMILY

The benchmark (fsgen.demo.arith) is plain Python; the names from fsgen.demo.train and
fsgen.demo.family import torch and transformers, so they are loaded on first use: the data rule
does not pay seconds of imports for them.
"""

from fsgen.demo.arith import (
    Difficulty, check_problem, extract_flexible, extract_strict, extract_tuned_style, final_answer,
    generate_problems, read_jsonl, to_tuned_style, write_jsonl, write_splits,
)

_LAZY = {
    "fsgen.demo.family": ("DEFAULT_FAMILY", "DEFAULT_TUNED", "spec_for"),
    "fsgen.demo.tokenizer": ("format_prompt", "format_target", "train_tokenizer"),
    "fsgen.demo.train": ("ModelSpec", "TunedSpec", "finetune_tuned", "read_sidecar", "train_model"),
}


def __getattr__(name):
    import importlib

    for module, names in _LAZY.items():
        if name in names:
            return getattr(importlib.import_module(module), name)
    raise AttributeError(f"module 'fsgen.demo' has no attribute {name!r}")


__all__ = [
    "Difficulty", "check_problem", "extract_flexible", "extract_strict", "extract_tuned_style", "final_answer",
    "generate_problems", "read_jsonl", "to_tuned_style", "write_jsonl", "write_splits",
    *(name for names in _LAZY.values() for name in names),
]
