"""The shared-tokenizer check on pairs of tokenizers of the SAME size that map strings to other ids
(another normalizer, pre-tokenizer, merge order, added-token ids), each refused with what differs;
tokenizers that differ only in presentation (EOS, chat template) accepted with a warning. No
models: the mutation-testing selection of `fsgen/decoding/models.py`'s tokenizer functions with
tests/test_tokenizers.py (docs/testing.md)."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
from tokenizers import Tokenizer
from transformers import PreTrainedTokenizerFast

from fsgen.decoding.models import (
    TokenizerMismatch,
    check_shared_tokenizer,
    load_model,
    load_tokenizer,
    looks_local,
    presentation_differences,
    shared_vocab_size,
    tokenization_difference,
    tokenization_fingerprint,
    tokenization_spec,
    tokenizer_eos_ids,
)
from fsgen.testing import build_tokenizer

EXTRA = ["<|a|>", "<|b|>"]  # added tokens beyond the trained vocabulary


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    tok = build_tokenizer(tmp_path_factory.mktemp("base"), vocab_size=300)  # 300 > 260 bytes + specials: merges
    tok.add_tokens(EXTRA)
    return tok


def variant(tok: PreTrainedTokenizerFast, edit, **special) -> PreTrainedTokenizerFast:
    """A copy of `tok` whose backend JSON spec went through `edit(spec)`; the same special tokens
    unless given."""
    spec = json.loads(tok.backend_tokenizer.to_str())
    edit(spec)
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   **{**tok.special_tokens_map, **special})


def drop_added(spec):
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] not in EXTRA]


def reversed_added(tok):
    """The trained vocabulary with EXTRA added in the other order: their two ids swapped."""
    other = variant(tok, drop_added)
    other.add_tokens(EXTRA[::-1])
    return other


def swap_merges(spec):
    merges = spec["model"]["merges"]
    merges[0], merges[-1] = merges[-1], merges[0]


def prefix_space(spec):
    spec["pre_tokenizer"]["add_prefix_space"] = True


def nfkc(spec):
    spec["normalizer"] = {"type": "NFKC"}


def rename_unk(spec):  # one token of the vocabulary replaced by another string at the same id
    vocab = spec["model"]["vocab"]
    vocab["<oov>"] = vocab.pop("<unk>")
    spec["model"]["unk_token"] = "<oov>"
    for t in spec["added_tokens"]:
        if t["content"] == "<unk>":
            t["content"] = "<oov>"


def swap_vocab(spec):
    vocab = spec["model"]["vocab"]
    vocab["a"], vocab["b"] = vocab["b"], vocab["a"]


@pytest.mark.parametrize("edit, difference", [
    (reversed_added, "2 tokens with other ids (e.g. '<|a|>': {<|a|>} vs {<|b|>})"),
    (swap_vocab, "2 tokens with other ids (e.g. 'a': {a} vs {b})"),
    (swap_merges, "different merges"),
    (prefix_space, "different pre-tokenizer"),
    (nfkc, "different normalizer"),
    (rename_unk, "2 tokens in only one of them"),
], ids=["added-ids", "vocab-ids", "merge-order", "pre-tokenizer", "normalizer", "other-token"])
def test_same_size_other_ids_are_refused_naming_the_difference(base, edit, difference):
    if edit is reversed_added:
        other = reversed_added(base)
    elif edit is rename_unk:
        other = variant(base, edit, unk_token="<oov>")
    else:
        other = variant(base, edit)
    ids = base.get_vocab()
    difference = difference.replace("{<|a|>}", str(ids["<|a|>"])).replace("{<|b|>}", str(ids["<|b|>"]))
    difference = difference.replace("{a}", str(ids["a"])).replace("{b}", str(ids["b"]))
    assert len(other) == len(base) and shared_vocab_size(other) == shared_vocab_size(base) == len(base)
    assert tokenization_fingerprint(other) != tokenization_fingerprint(base)
    with pytest.raises(TokenizerMismatch) as err:
        check_shared_tokenizer({"small": base, "large": variant(base, lambda spec: None), "tuned": other})
    message = str(err.value)
    assert message.startswith("models 'small' and 'tuned' have different tokenizers (")
    assert f"{len(base)} vs {len(other)} tokens" in message and difference in message
    assert message.endswith("); collaborative decoding needs a shared tokenizer")
    assert difference in tokenization_difference(base, other)


def test_difference_lists_only_what_differs(base):
    same = variant(base, lambda spec: None)
    assert tokenization_difference(base, same) == f"{len(base)} vs {len(base)} tokens"
    both = tokenization_difference(base, variant(base, lambda spec: (nfkc(spec), prefix_space(spec))))
    assert both == f"{len(base)} vs {len(base)} tokens; different normalizer; different pre-tokenizer"


def test_spec_covers_what_decides_the_ids(base):
    spec = tokenization_spec(base)
    assert set(spec) == {"model", "normalizer", "pre_tokenizer", "added"}
    assert spec["added"]["<|a|>"] == base.convert_tokens_to_ids("<|a|>") and spec["added"]["</s>"] == 2
    assert spec["model"]["type"] == "BPE" and spec["normalizer"] == {"type": "NFC"}
    assert tokenization_fingerprint(base) == tokenization_fingerprint(variant(base, lambda s: None))
    slow = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1})  # no `tokenizers` backend
    assert tokenization_spec(slow) == {"class": "SimpleNamespace", "vocab": {"a": 0, "b": 1}}


def test_presentation_only_differences_are_accepted_and_logged(base, caplog):
    chat = variant(base, lambda spec: None)
    chat.eos_token = "<|b|>"
    chat.chat_template = "{{ messages }}"
    assert presentation_differences(base, base) == []
    assert presentation_differences(base, chat) == ["eos_token '</s>' vs '<|b|>'", "chat template: none vs a chat template"]
    other = variant(base, lambda spec: None)
    other.chat_template = "{{ other }}"
    assert presentation_differences(chat, other) == ["eos_token '<|b|>' vs '</s>'", "different chat templates"]
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.models"):
        check_shared_tokenizer({"base": base, "chat": chat})
    assert "models 'base' and 'chat' share a vocabulary but differ in eos_token '</s>' vs '<|b|>'; chat template" \
        in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.models"):
        check_shared_tokenizer({"one": base, "two": variant(base, lambda spec: None)})
    assert caplog.text == ""


def test_load_tokenizer_reads_the_folder_file_and_pads_left(tmp_path, base):
    folder = tmp_path / "tok"
    no_pad = variant(base, lambda spec: None)
    no_pad.pad_token = None
    no_pad.save_pretrained(str(folder))
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2"}))  # would pick Qwen2Tokenizer
    loaded = load_tokenizer(str(folder))
    assert isinstance(loaded, PreTrainedTokenizerFast)
    assert loaded.pad_token == "</s>" and loaded.padding_side == "left"
    assert tokenization_fingerprint(loaded) == tokenization_fingerprint(base)
    assert tokenizer_eos_ids(loaded) == (2,)
    loaded.eos_token = None
    assert tokenizer_eos_ids(loaded) == ()


@pytest.mark.parametrize("path, local", [
    ("Qwen/Qwen1.5-0.5B", False), ("gpt2", False), ("/models/x", True), ("./x", True), ("~/m", True),
    ("results/models/arith-s", True), ("org/name/sub", True),
])
def test_looks_local(path, local):
    assert looks_local(path) is local


def test_looks_local_for_an_existing_folder(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert looks_local("org/name") and not looks_local("org/other")


def test_load_model_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match=r"unknown dtype 'fp8'; expected one of \['auto', 'bfloat16', 'float16'"):
        load_model("nowhere", dtype="fp8")
