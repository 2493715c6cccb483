"""Loading the systems of a pair: tokenizers first (checked to be shared), then weights."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

DTYPES = {"auto": "auto", "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def looks_local(path: str) -> bool:
    """A filesystem path rather than a hub id (`name` or `org/name`): it exists, or starts with
    '/', '.' or '~', or has more than one '/' (or the OS's own separator, on Windows)."""
    return (Path(path).expanduser().exists() or path.startswith(("/", ".", "~")) or path.count("/") > 1
            or (os.sep != "/" and os.sep in path))


class TokenizerMismatch(ValueError):
    """Two systems of a pair do not share a tokenizer."""


def load_tokenizer(path_or_id: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Load a tokenizer without letting transformers swap in a class-specific one.

    `AutoTokenizer` on a folder whose config says `qwen2` builds Qwen2Tokenizer from the hub's
    vocabulary files and ignores a locally trained `tokenizer.json`; a local folder with a
    `tokenizer.json` is therefore read as exactly that file.
    """
    folder = Path(path_or_id)
    if folder.is_dir() and (folder / "tokenizer.json").exists():
        tok = PreTrainedTokenizerFast.from_pretrained(str(folder))
    else:
        tok = AutoTokenizer.from_pretrained(path_or_id, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        # Padding is only ever masked out; any id works, EOS is the usual choice.
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    return tok


def tokenizer_fingerprint(tok: PreTrainedTokenizerBase) -> str:
    """A hash of what decides tokenisation: the vocabulary and the special tokens."""
    payload = json.dumps(
        {"vocab": sorted(tok.get_vocab().items()), "special": tok.special_tokens_map},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def check_shared_tokenizer(named_tokenizers: dict[str, PreTrainedTokenizerBase]) -> None:
    """Raise `TokenizerMismatch` naming the models whose tokenizers differ from the first one."""
    items = list(named_tokenizers.items())
    first_name, first = items[0]
    reference = tokenizer_fingerprint(first)
    for name, tok in items[1:]:
        if tokenizer_fingerprint(tok) != reference:
            raise TokenizerMismatch(
                f"models {first_name!r} and {name!r} have different tokenizers "
                f"({len(first)} vs {len(tok)} tokens); collaborative decoding needs a shared tokenizer"
            )


def shared_vocab_size(tok: PreTrainedTokenizerBase) -> int:
    """Logits are compared on the tokenizer's vocabulary only.

    Models of one family pad their embedding matrices to different sizes (Qwen1.5-0.5B has
    151936 rows, Qwen1.5-72B 152064); rows past the tokenizer are never real tokens.
    """
    return len(tok)


def load_model(
    path_or_id: str,
    dtype: str = "float32",
    device: str = "cpu",
    trust_remote_code: bool = False,
) -> torch.nn.Module:
    """`AutoModelForCausalLM.from_pretrained` with the caller's dtype and device, in eval mode.

    `device="auto"` spreads a model larger than one GPU over all visible GPUs (`device_map="auto"`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if device == "auto":
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    if device != "auto":
        model = model.to(device)
    return model.eval()


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go (its input embeddings' device, also under device_map='auto')."""
    return model.get_input_embeddings().weight.device
