"""The embedded demo: the "arith" benchmark and a family of tiny Llama models trained on it.

    from fsgen.demo import write_splits, train_tokenizer, train_model, finetune_tuned, DEFAULT_FAMILY
"""

from fsgen.demo.arith import (
    Difficulty, check_problem, extract_flexible, extract_strict, extract_tuned_style, final_answer,
    generate_problems, read_jsonl, to_tuned_style, write_jsonl, write_splits,
)
from fsgen.demo.family import DEFAULT_FAMILY, DEFAULT_TUNED, spec_for
from fsgen.demo.train import (
    ModelSpec, TunedSpec, finetune_tuned, format_prompt, format_target, read_sidecar, train_model, train_tokenizer,
)

__all__ = [
    "Difficulty", "check_problem", "extract_flexible", "extract_strict", "extract_tuned_style", "final_answer",
    "generate_problems", "read_jsonl", "to_tuned_style", "write_jsonl", "write_splits",
    "DEFAULT_FAMILY", "DEFAULT_TUNED", "spec_for",
    "ModelSpec", "TunedSpec", "finetune_tuned", "format_prompt", "format_target", "read_sidecar", "train_model",
    "train_tokenizer",
]
