"""Batching, stopping, odd inputs and model loading of the decoding engine."""

from __future__ import annotations

import copy
import logging

import pandas as pd
import pytest
import torch

import fsgen.decoding.engine as engine
from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, load_systems, prepare_prompt
from fsgen.decoding.models import TokenizerMismatch
from fsgen.testing import build_model, build_tiny_family, build_tokenizer

torch.set_num_threads(1)

MIXED = [
    "Tom has 3 apples. He buys 4 more.",
    "Q",
    "def add(a, b):\n    return",
    "",
    "The quick brown fox jumps over the lazy dog. " * 4,
    "12 - 5 =",
    "Small models write most tokens; large models",
    "A box holds 6 eggs.",
]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return build_tiny_family(tmp_path_factory.mktemp("family"))


@pytest.fixture(scope="module")
def systems(family):
    return load_systems("proxy", small=str(family["small"]), large=str(family["large"]), small_tuned=str(family["small_tuned"]))


def assert_frames_close(a: pd.DataFrame, b: pd.DataFrame, atol=1e-5):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for col in a.columns:
        if col == "s1_topk_probs":
            assert all(max(abs(p - q) for p, q in zip(u, v)) < atol for u, v in zip(a[col], b[col]))
        elif col == "s1_topk_ids":
            assert [list(u) for u in a[col]] == [list(v) for v in b[col]]
        elif pd.api.types.is_float_dtype(a[col]):
            x, y = a[col], b[col]
            assert ((x.isna() & y.isna()) | ((x - y).abs() <= atol + atol * y.abs())).all(), col
        else:
            assert a[col].tolist() == b[col].tolist(), col


@pytest.mark.parametrize(
    "method,router",
    [("single:small", "always"), ("single:large", "always"), ("oracle", "always"), ("oracle", "threshold:0.08"),
     ("contrastive", "margin:0.03"), ("proxy", "entropy:3.3")],
)
def test_batch_of_8_equals_one_by_one(systems, method, router):
    method, _, alone_role = method.partition(":")  # single:<role>: that model alone
    if alone_role:
        systems = systems.alone(alone_role)
    config = dict(method=method, router=router, max_new_tokens=12, top_k=3, stop=("apples",), progress=False)
    batched = decode(systems, MIXED, DecodeConfig(batch_size=8, **config))
    alone = decode(systems, MIXED, DecodeConfig(batch_size=1, **config))
    assert batched.generations == alone.generations
    assert_frames_close(batched.trace, alone.trace)
    if router not in ("always", "never"):
        called = batched.trace["s2_called"]
        assert 0 < called.sum() < len(called)  # the router really mixes consulted and skipped rows


def test_generations_in_input_order_and_request_ids(systems):
    ids = [10 + i for i in range(len(MIXED))]
    seen = []
    result = decode(systems.alone("small"), MIXED, DecodeConfig(method="single", max_new_tokens=4, batch_size=3, progress=False),
                    request_ids=ids, on_result=lambda g, rows: seen.append((g["request_id"], len(rows))))
    assert [g["request_id"] for g in result.generations] == ids
    assert [g["prompt"] for g in result.generations] == MIXED
    assert sorted(seen) == [(i, len(g["token_ids"])) for i, g in zip(ids, result.generations)]
    assert result.trace["request_id"].is_monotonic_increasing


def test_padded_vocabulary(systems):
    padded = systems.large.get_output_embeddings().weight.shape[0]
    assert padded == systems.vocab_size + 7
    result = decode(systems, MIXED, DecodeConfig(method="oracle", max_new_tokens=8, progress=False))
    assert all(t < systems.vocab_size for g in result.generations for t in g["token_ids"])


def test_padded_rows_never_chosen_even_when_they_dominate(family):
    """Rows past the tokenizer get huge logits; every method must still ignore them."""
    systems = load_systems("oracle", small=str(family["small"]), large=str(family["large"]))
    head = systems.large.get_output_embeddings().weight
    with torch.no_grad():
        head[systems.vocab_size:] = head[: systems.vocab_size].sum(0) * 0 + 50.0
    for method, router in [("oracle", "always"), ("oracle", "threshold:1.01"), ("single", "always"), ("contrastive", "always")]:
        alone = systems.alone("large") if method == "single" else systems
        result = decode(alone, MIXED[:3], DecodeConfig(method=method, router=router, max_new_tokens=5, progress=False))
        assert all(t < systems.vocab_size for g in result.generations for t in g["token_ids"]), method


def test_different_tokenizers_refused_before_weights(family, tmp_path, monkeypatch):
    other_tok = build_tokenizer(tmp_path / "tok", vocab_size=300, corpus=["zebra quartz vexing jumbo"] * 30)
    other = build_model(tmp_path / "other", other_tok)
    monkeypatch.setattr(engine, "load_model", lambda *a, **k: pytest.fail("weights loaded before the check"))
    with pytest.raises(TokenizerMismatch) as err:
        load_systems("oracle", small=str(other), large=str(family["large"]))
    assert str(other) in str(err.value) and str(family["large"]) in str(err.value)


def test_missing_role_refused(family):
    with pytest.raises(ValueError, match="small_tuned"):
        load_systems("proxy", small=str(family["small"]), large=str(family["large"]))
    systems = load_systems("oracle", small=str(family["small"]), large=str(family["large"]))
    with pytest.raises(ValueError, match="small_tuned"):
        decode(systems, ["x"], DecodeConfig(method="proxy", max_new_tokens=2, progress=False))


def test_eos_stops_and_no_eos_runs_to_max(family):
    systems = load_systems("oracle", small=str(family["small"]), large=str(family["large"]))
    config = DecodeConfig(method="single", max_new_tokens=6, progress=False)
    free = decode(systems.alone("small"), MIXED, config)
    eos = systems.tokenizer.eos_token_id
    for g in free.generations:  # a model that never emits EOS runs to max_new_tokens
        assert len(g["token_ids"]) == 6 or g["token_ids"][-1] == eos
    # declare the first token the model emits for prompt 0 an EOS token: it stops right there
    first = free.generations[0]["token_ids"][0]
    systems.small.generation_config.eos_token_id = first
    try:
        stopped = decode(systems.alone("small"), MIXED[:1], config)
    finally:
        systems.small.generation_config.eos_token_id = eos
    assert stopped.generations[0]["token_ids"] == [first]
    assert stopped.generations[0]["text"] == systems.tokenizer.decode([first], skip_special_tokens=True)


def test_stop_strings_cut_text(systems):
    free = decode(systems.alone("large"), MIXED[:4], DecodeConfig(method="single", max_new_tokens=10, progress=False))
    text = systems.tokenizer.decode(free.generations[0]["token_ids"], skip_special_tokens=True)
    stop_string = text[3:5]
    assert stop_string
    cut = decode(systems.alone("large"), MIXED[:4], DecodeConfig(method="single", max_new_tokens=10, stop=(stop_string,), progress=False))
    g = cut.generations[0]
    assert stop_string not in g["text"] and text.startswith(g["text"])
    full_text = systems.tokenizer.decode(g["token_ids"], skip_special_tokens=True)
    assert stop_string in full_text  # the token completing the stop string is kept
    assert stop_string not in systems.tokenizer.decode(g["token_ids"][:-1], skip_special_tokens=True)


def test_empty_prompt_starts_from_bos(systems):
    bos = systems.tokenizer.bos_token_id
    assert prepare_prompt(systems.tokenizer, "", 3, 5, 512) == [bos]
    empty = decode(systems.alone("small"), [""], DecodeConfig(method="single", max_new_tokens=4, progress=False))
    bos_text = decode(systems.alone("small"), [systems.tokenizer.bos_token], DecodeConfig(method="single", max_new_tokens=4, progress=False))
    assert empty.generations[0]["token_ids"] == bos_text.generations[0]["token_ids"]


def test_empty_prompt_without_bos_raises(systems):
    no_bos = copy.copy(systems)
    no_bos.tokenizer = copy.deepcopy(systems.tokenizer)
    no_bos.tokenizer.bos_token = None
    with pytest.raises(ValueError, match="request 7"):
        decode(no_bos.alone("small"), ["hi", ""], DecodeConfig(method="single", max_new_tokens=2, progress=False), request_ids=[6, 7])


def test_long_prompt_left_truncated(systems, caplog):
    tok = systems.tokenizer
    long_prompt = "The quick brown fox jumps over the lazy dog. " * 80
    ids = tok(long_prompt).input_ids
    assert len(ids) > 512 - 8
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.engine"):
        kept = prepare_prompt(tok, long_prompt, 4, 8, 512)
    assert kept == ids[-(512 - 8):]
    assert "request 4" in caplog.text
    result = decode(systems, [long_prompt], DecodeConfig(method="oracle", router="threshold:0.1", max_new_tokens=8, progress=False))
    assert len(result.generations[0]["token_ids"]) >= 1
    with pytest.raises(ValueError, match="max_new_tokens"):
        prepare_prompt(tok, "x", 0, 512, 512)


def test_progress_bar_off_when_asked(systems, capsys):
    decode(systems.alone("small"), MIXED[:2], DecodeConfig(method="single", max_new_tokens=2, progress=False))
    assert "batch" not in capsys.readouterr().err
    decode(systems.alone("small"), MIXED[:2], DecodeConfig(method="single", max_new_tokens=2, progress=True))
    assert "batch" in capsys.readouterr().err
