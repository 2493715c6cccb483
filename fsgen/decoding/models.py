"""Loading the systems of a pair: tokenizers first (checked to map strings to the same ids), then weights."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

log = logging.getLogger(__name__)

DTYPES = {"auto": "auto", "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


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


def tokenization_spec(tok: PreTrainedTokenizerBase) -> dict:
    """What decides which ids a string becomes: the vocabulary, the merges, the normalizer and
    pre-tokenizer, and the added tokens (content -> id).

    Deliberately left out: which added tokens are called BOS/EOS/PAD (special tokens), the
    chat template and the post-processor. Base and chat variants of one family (Qwen1.5 and
    Qwen1.5-Chat: EOS `<|endoftext|>` vs `<|im_end|>`) differ only there and share the ids.
    """
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is None:  # a tokenizer without a `tokenizers` backend: its vocabulary is what we can see
        return {"class": type(tok).__name__, "vocab": dict(tok.get_vocab())}
    spec = json.loads(backend.to_str())
    return {
        "model": spec.get("model"),  # type, vocab, merges, unk handling
        "normalizer": spec.get("normalizer"),
        "pre_tokenizer": spec.get("pre_tokenizer"),
        "added": {t["content"]: t["id"] for t in spec.get("added_tokens") or []},
    }


def tokenization_fingerprint(tok: PreTrainedTokenizerBase) -> str:
    """A hash of `tokenization_spec`: equal for tokenizers that map the same strings to the same ids."""
    return hashlib.sha256(json.dumps(tokenization_spec(tok), sort_keys=True, default=str).encode()).hexdigest()


def tokenization_difference(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> str:
    """In words, where two tokenizers map strings to ids differently (for the mismatch error)."""
    spec_a, spec_b = tokenization_spec(a), tokenization_spec(b)
    vocab_a, vocab_b = a.get_vocab(), b.get_vocab()
    parts = [f"{len(vocab_a)} vs {len(vocab_b)} tokens"]
    other_ids = sorted(t for t in vocab_a.keys() & vocab_b.keys() if vocab_a[t] != vocab_b[t])
    if other_ids:
        parts.append(f"{len(other_ids)} tokens with other ids (e.g. {other_ids[0]!r}: "
                     f"{vocab_a[other_ids[0]]} vs {vocab_b[other_ids[0]]})")
    only = len(vocab_a.keys() ^ vocab_b.keys())
    if only:
        parts.append(f"{only} tokens in only one of them")
    model_a, model_b = spec_a.get("model") or {}, spec_b.get("model") or {}
    if model_a.get("merges") != model_b.get("merges"):
        parts.append("different merges")
    for key in ("normalizer", "pre_tokenizer"):
        if spec_a.get(key) != spec_b.get(key):
            parts.append(f"different {key.replace('_', '-')}")
    return "; ".join(parts)


def presentation_differences(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> list[str]:
    """What differs beyond tokenisation: special tokens and the chat template (logged, not errors)."""
    found = []
    special_a, special_b = a.special_tokens_map, b.special_tokens_map
    for key in sorted(special_a.keys() | special_b.keys()):
        if special_a.get(key) != special_b.get(key):
            found.append(f"{key} {special_a.get(key)!r} vs {special_b.get(key)!r}")
    if getattr(a, "chat_template", None) != getattr(b, "chat_template", None):
        has = lambda t: "a chat template" if getattr(t, "chat_template", None) else "none"  # noqa: E731
        found.append(f"chat template: {has(a)} vs {has(b)}" if has(a) != has(b) else "different chat templates")
    return found


def check_shared_tokenizer(named_tokenizers: dict[str, PreTrainedTokenizerBase]) -> None:
    """Raise `TokenizerMismatch` naming the models whose tokenizers map strings to other ids
    than the first one's; log (naming both) differences in special tokens or chat template."""
    items = list(named_tokenizers.items())
    first_name, first = items[0]
    reference = tokenization_fingerprint(first)
    for name, tok in items[1:]:
        if tokenization_fingerprint(tok) != reference:
            raise TokenizerMismatch(
                f"models {first_name!r} and {name!r} have different tokenizers "
                f"({tokenization_difference(first, tok)}); collaborative decoding needs a shared tokenizer"
            )
        differences = presentation_differences(first, tok)
        if differences:
            log.warning("models %r and %r share a vocabulary but differ in %s; decoding stops at every "
                        "model's EOS", first_name, name, "; ".join(differences))


def tokenizer_eos_ids(tok: PreTrainedTokenizerBase) -> tuple[int, ...]:
    """The tokenizer's own EOS id (empty when it has none)."""
    return () if tok.eos_token_id is None else (int(tok.eos_token_id),)


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
    device_map: dict | None = None,
) -> torch.nn.Module:
    """`AutoModelForCausalLM.from_pretrained` with the caller's dtype and device, in eval mode.

    `device_map` (a placement plan's, `fsgen.decoding.placement`): the weights stream from the
    checkpoint to the mapped GPUs (`from_pretrained(device_map=..., dtype=...)`, no `.to()`, no
    full copy in host memory). `device="auto"` spreads a model larger than one GPU over all
    visible GPUs (`device_map="auto"`).
    """
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPES)}")
    kwargs = {"dtype": DTYPES[dtype], "trust_remote_code": trust_remote_code}
    if device_map is not None:
        kwargs["device_map"] = device_map
    elif device == "auto":
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(path_or_id, **kwargs)
    if "device_map" not in kwargs:
        model = model.to(device)
    return model.eval()


def model_spec(name: str, path_or_id: str, dtype: str, trust_remote_code: bool = False, gpus: int | None = None):
    """The placement planner's `ModelSpec` of a model, from its config.json (`AutoConfig` on a
    folder or hub id; no weights are read). dtype "auto": the checkpoint's own."""
    from transformers import AutoConfig

    from fsgen.decoding.placement import ModelSpec

    config = AutoConfig.from_pretrained(path_or_id, trust_remote_code=trust_remote_code).to_dict()
    if dtype == "auto":
        dtype = str(config.get("dtype") or config.get("torch_dtype") or "float32").removeprefix("torch.")
    return ModelSpec.from_hf_config(name, config, dtype=dtype, gpus=gpus)


def visible_gpus() -> tuple[int, float]:
    """(number of GPUs this process sees, the smallest one's memory in GiB); (0, 0.0) without CUDA."""
    if not torch.cuda.is_available():
        return 0, 0.0
    count = torch.cuda.device_count()
    memory = min((torch.cuda.get_device_properties(i).total_memory for i in range(count)), default=0)
    return count, memory / (1 << 30)


def model_device(model: torch.nn.Module) -> torch.device:
    """Where a model's inputs go (its input embeddings' device, also under device_map='auto')."""
    return model.get_input_embeddings().weight.device
