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

from fsgen import fingerprint
from fsgen.decoding import models
from fsgen.decoding.models import (
    TokenizerMismatch,
    check_shared_tokenizer,
    load_model,
    load_tokenizer,
    presentation_differences,
    shared_vocab_size,
    tokenization_difference,
    tokenization_fingerprint,
    tokenization_spec,
    tokenizer_eos_ids,
)
from fsgen.fingerprint import looks_local
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
    merges = tokenization_difference(base, variant(base, swap_merges))
    assert merges == f"{len(base)} vs {len(base)} tokens; different merges"


def test_spec_covers_what_decides_the_ids(base):
    spec = tokenization_spec(base)
    assert set(spec) == {"model", "normalizer", "pre_tokenizer", "added"}
    assert spec["added"]["<|a|>"] == base.convert_tokens_to_ids("<|a|>") and spec["added"]["</s>"] == 2
    assert spec["model"]["type"] == "BPE" and spec["normalizer"] == {"type": "NFC"}
    assert tokenization_fingerprint(base) == tokenization_fingerprint(variant(base, lambda s: None))
    slow = SimpleNamespace(get_vocab=lambda: {"a": 0, "b": 1})  # no `tokenizers` backend
    assert tokenization_spec(slow) == {"class": "SimpleNamespace", "vocab": {"a": 0, "b": 1}}
    # the same strings -> ids listed in another order: the same tokenisation, the same fingerprint
    reordered = SimpleNamespace(get_vocab=lambda: {"b": 1, "a": 0})
    assert tokenization_fingerprint(reordered) == tokenization_fingerprint(slow)
    assert tokenization_fingerprint(SimpleNamespace(get_vocab=lambda: {"b": 0, "a": 1})) != tokenization_fingerprint(slow)


def test_presentation_only_differences_are_accepted_and_logged(base, caplog):
    chat = variant(base, lambda spec: None)
    chat.eos_token = "<|b|>"
    chat.chat_template = "{{ messages }}"
    assert presentation_differences(base, base) == []
    assert presentation_differences(base, chat) == ["eos_token '</s>' vs '<|b|>'", "chat template: none vs a chat template"]
    other = variant(base, lambda spec: None)
    other.chat_template = "{{ other }}"
    assert presentation_differences(chat, other) == ["eos_token '<|b|>' vs '</s>'", "different chat templates"]
    assert presentation_differences(chat, base) == ["eos_token '<|b|>' vs '</s>'", "chat template: a chat template vs none"]
    same_template = variant(base, lambda spec: None)
    same_template.chat_template = chat.chat_template
    assert presentation_differences(chat, same_template) == ["eos_token '<|b|>' vs '</s>'"]
    extra = variant(base, lambda spec: None)
    extra.cls_token = "<|a|>"  # a special token only one of them names
    assert presentation_differences(base, extra) == ["cls_token None vs '<|a|>'"]
    assert presentation_differences(extra, base) == ["cls_token '<|a|>' vs None"]
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.models"):
        check_shared_tokenizer({"base": base, "chat": chat})
    assert [r.getMessage() for r in caplog.records] == [
        "models 'base' and 'chat' share a vocabulary but differ in eos_token '</s>' vs '<|b|>'; chat template: "
        "none vs a chat template; decoding stops at every model's EOS"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.models"):
        check_shared_tokenizer({"one": base, "two": variant(base, lambda spec: None)})
    assert caplog.text == ""


def test_presentation_of_tokenizers_without_a_chat_template_attribute():
    """Duck-typed tokenizers (no `chat_template` attribute at all) read as having none."""
    bare = SimpleNamespace(special_tokens_map={"eos_token": "</s>"})
    templated = SimpleNamespace(special_tokens_map={"eos_token": "</s>"}, chat_template="{{ messages }}")
    assert presentation_differences(bare, bare) == []
    assert presentation_differences(bare, templated) == ["chat template: none vs a chat template"]
    assert presentation_differences(templated, bare) == ["chat template: a chat template vs none"]


def test_load_tokenizer_without_a_tokenizer_file_goes_through_autotokenizer(tmp_path, base, monkeypatch):
    """A hub id, or a folder without tokenizer.json, is AutoTokenizer's, with remote code off unless asked."""
    calls = []

    def from_pretrained(path_or_id, **kwargs):
        calls.append((path_or_id, kwargs))
        no_pad = variant(base, lambda spec: None)
        no_pad.pad_token = None
        return no_pad

    monkeypatch.setattr(models.AutoTokenizer, "from_pretrained", from_pretrained)
    (tmp_path / "slow").mkdir()
    (tmp_path / "slow" / "vocab.json").write_text("{}")
    loaded = load_tokenizer(str(tmp_path / "slow"))
    assert loaded.pad_token == "</s>" and loaded.padding_side == "left"
    load_tokenizer("org/name")
    load_tokenizer("org/custom", trust_remote_code=True)
    assert calls == [(str(tmp_path / "slow"), {"trust_remote_code": False}),
                     ("org/name", {"trust_remote_code": False}), ("org/custom", {"trust_remote_code": True})]


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
    ("results/models/arith-s", True), ("org/name/sub", True), ("/checkpoint", True),
])
def test_looks_local(path, local):
    assert looks_local(path) is local


def test_looks_local_for_an_existing_folder(tmp_path, monkeypatch):
    (tmp_path / "org" / "name").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert looks_local("org/name") and not looks_local("org/other")


def test_looks_local_with_the_windows_separator(monkeypatch):
    monkeypatch.setattr(fingerprint.os, "sep", "\\")
    assert looks_local("C:\\models\\small") and not looks_local("gpt2") and not looks_local("Qwen/Qwen1.5-0.5B")


def test_load_model_refuses_an_unknown_dtype():
    with pytest.raises(ValueError, match=r"unknown dtype 'fp8'; expected one of \['auto', 'bfloat16', 'float16'"):
        load_model("nowhere", dtype="fp8")
