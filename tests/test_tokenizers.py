"""Tokenizer compatibility by what decides the ids (vocabulary, merges, added tokens), not by
special tokens or chat template; decoding stops at the EOS of every model in use."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from fsgen.decoding import engine
from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_systems
from fsgen.decoding.models import TokenizerMismatch, check_shared_tokenizer, load_tokenizer
from fsgen.testing import CHAT_TOKENS, build_chat_tokenizers, build_model, build_tokenizer, tokenizer_variant

torch.set_num_threads(1)

PROMPTS = ["Tom has 3 apples.", "The quick brown fox jumps over", "def add(a, b):"]
MAX_NEW = 10


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    root = tmp_path_factory.mktemp("tokenizers")
    base, chat = build_chat_tokenizers(root)
    return root, base, chat


def test_base_and_chat_variants_share_ids_and_the_difference_is_logged(tokenizers, caplog):
    root, base, chat = tokenizers
    assert base.eos_token != chat.eos_token and chat.chat_template and not base.chat_template
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.models"):
        check_shared_tokenizer({"Qwen-base": load_tokenizer(str(root / "base")),
                                "Qwen-Chat": load_tokenizer(str(root / "chat"))})
    message = caplog.text
    assert "'Qwen-base'" in message and "'Qwen-Chat'" in message
    assert "eos_token '</s>' vs '<|im_end|>'" in message and "chat template" in message


def test_same_size_other_ids_is_refused(tokenizers, tmp_path):
    root, base, _ = tokenizers
    swapped = tokenizer_variant(root / "base", tmp_path / "swapped", swap=("a", "b"))
    assert len(swapped) == len(base)  # same vocabulary size, same token strings
    with pytest.raises(TokenizerMismatch, match=r"'one' and 'two'.*2 tokens with other ids"):
        check_shared_tokenizer({"one": load_tokenizer(str(root / "base")), "two": load_tokenizer(str(tmp_path / "swapped"))})


def test_same_size_other_merges_is_refused_before_weights(tmp_path, monkeypatch):
    first = build_tokenizer(tmp_path / "t1", vocab_size=300)
    second = build_tokenizer(tmp_path / "t2", vocab_size=300, corpus=["zebra quartz vexing jumbo wizard",
                                                                         "the lazy dog sleeps all day long"] * 20)
    assert len(first) == len(second) == 300
    small, large = build_model(tmp_path / "small", first), build_model(tmp_path / "large", second)
    monkeypatch.setattr(engine, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(TokenizerMismatch, match="different merges") as err:
        load_systems("oracle", small=str(small), large=str(large))
    assert str(small) in str(err.value) and str(large) in str(err.value)


# ---------------------------------------------------------------- EOS of every model in use


def greedy_reference(model, tokenizer, prompt: str, stop_ids: set[int], vocab: int) -> list[int]:
    """Greedy tokens of one model, one full forward per token, stopping at any of `stop_ids`."""
    ids, out = tokenizer(prompt).input_ids, []
    for _ in range(MAX_NEW):
        with torch.no_grad():
            token = int(model(input_ids=torch.tensor([ids + out])).logits[0, -1, :vocab].argmax())
        out.append(token)
        if token in stop_ids:
            break
    return out


def spell_as(model, tokenizer, prompt: str, target: int) -> None:
    """Make `model` emit `target` where it first emits a token it had not emitted before position 1
    (its output row becomes 1.01 x that token's row), so a generation reaches `target` mid-way."""
    free = greedy_reference(model, tokenizer, prompt, set(), len(tokenizer))
    position = next(j for j in range(1, len(free)) if free[j] not in free[:j])
    head = model.get_output_embeddings().weight
    with torch.no_grad():
        head[target] = 1.01 * head[free[position]]


@pytest.fixture(scope="module")
def chat_pair(tokenizers, tmp_path_factory):
    """small: base tokenizer (EOS </s>); large: the chat tokenizer (EOS <|im_end|>), whose
    generation_config names only </s>: only the chat tokenizer says <|im_end|> ends a row. The
    large model spells prompt 0's new token as <|im_end|> and prompt 1's as </s>."""
    root, base, chat = tokenizers
    out = tmp_path_factory.mktemp("chat_pair")
    small = build_model(out / "small", base, hidden_size=32, num_layers=2, seed=0)
    large = build_model(out / "large", chat, hidden_size=64, num_layers=3, seed=1, vocab_pad=5)
    model = AutoModelForCausalLM.from_pretrained(str(large)).eval()
    im_end, end = chat.convert_tokens_to_ids(CHAT_TOKENS[1]), base.eos_token_id
    spell_as(model, chat, PROMPTS[0], im_end)
    spell_as(model, chat, PROMPTS[1], end)
    model.generation_config.eos_token_id = end
    model.config.eos_token_id = end
    model.save_pretrained(str(large))
    return small, large, (im_end, end)


def test_decoding_stops_at_the_eos_of_every_model(chat_pair):
    small, large, (im_end, end) = chat_pair
    systems = load_systems("oracle", small=str(small), large=str(large))
    assert systems.tokenizer.eos_token_id == end  # the shared tokenizer is the small (base) one's
    assert systems.tokenizer_eos == {"small": (end,), "large": (im_end,)}
    assert systems.stop_token_ids(["small", "large"]) == {end, im_end}
    expected = [greedy_reference(systems.large, systems.tokenizer, p, {end, im_end}, systems.vocab_size)
                for p in PROMPTS]
    assert expected[0][-1] == im_end and expected[1][-1] == end  # both EOS are reached mid-way
    for router in ("always", "threshold:1.01"):  # the fast path and the step loop
        result = decode(systems, PROMPTS, DecodeConfig(method="oracle", router=router, max_new_tokens=MAX_NEW,
                                                       progress=False))
        assert [g["token_ids"] for g in result.generations] == expected, router
        assert CHAT_TOKENS[1] not in result.generations[0]["text"]
    alone = decode(systems.alone("large"), PROMPTS, DecodeConfig(method="single", max_new_tokens=MAX_NEW, progress=False))
    assert alone.generations[0]["token_ids"] == expected[0]  # the large model alone keeps its tokenizer's EOS
    # without the chat tokenizer's EOS the row would have gone on
    blind = engine.Systems(systems.tokenizer, systems.models, systems.names, systems.vocab_size)
    longer = decode(blind, PROMPTS[:1], DecodeConfig(method="oracle", max_new_tokens=MAX_NEW, progress=False))
    assert len(longer.generations[0]["token_ids"]) > len(expected[0])
