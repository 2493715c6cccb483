"""`decode_ids` (decoding from token ids) and the proxy trace's base argmax (`s1_base_token_id`),
each against a slow reference written out here: full forwards without cache, one prompt at a time."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.engine import decode, decode_ids, load_systems
from fsgen.testing import build_tiny_family
from fsgen.trace import read_trace, write_trace

torch.set_num_threads(1)
MAX_NEW = 9


@pytest.fixture(scope="module")
def systems(tmp_path_factory):
    family = build_tiny_family(tmp_path_factory.mktemp("family"))
    return load_systems("proxy", small=str(family["small"]), large=str(family["large"]),
                        small_tuned=str(family["small_tuned"]))


def next_logprobs(model, ids: list[int], vocab: int) -> torch.Tensor:
    """[V] log-probs after `ids`: one full forward, no cache."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids])).logits[0, -1, :vocab].float()
    return torch.log_softmax(logits, dim=-1)


def reference_oracle(systems, prompt_ids: list[int], consult=lambda s1: True) -> list[int]:
    """Oracle decoding written out: the large model's argmax where consulted, else the small model's."""
    out, eos, vocab = [], systems.tokenizer.eos_token_id, systems.vocab_size
    for _ in range(MAX_NEW):
        s1 = next_logprobs(systems.small, prompt_ids + out, vocab)
        model = systems.large if consult(s1) else None
        token = int(next_logprobs(model, prompt_ids + out, vocab).argmax()) if model is not None else int(s1.argmax())
        out.append(token)
        if token == eos:
            break
    return out


def id_prompts(systems) -> list[list[int]]:
    """Prompts as ids, all but the first of which no text tokenises to (lone bytes of a multi-byte
    character decode to U+FFFD): decoding must read them as given."""
    tok = systems.tokenizer
    text_ids = tok("Tom has 3 apples.").input_ids
    lone = [i for i in range(4, systems.vocab_size) if "\ufffd" in tok.decode([i])][:2]
    return [text_ids, text_ids[:3] + lone + text_ids[3:6], [lone[0]] + text_ids[-4:], [lone[1], tok.bos_token_id]]


def test_prompts_are_not_retokenised(systems):
    tok = systems.tokenizer
    for ids in id_prompts(systems)[1:]:
        assert tok(tok.decode(ids, skip_special_tokens=False), add_special_tokens=False).input_ids != ids


@pytest.mark.parametrize("router", ["always", "threshold:0.08"])
def test_decode_ids_equals_slow_reference(systems, router):
    prompts = id_prompts(systems)
    config = DecodeConfig(method="oracle", router=router, max_new_tokens=MAX_NEW, batch_size=3, progress=False)
    result = decode_ids(systems, prompts, config)
    t = 0.08
    consult = (lambda s: True) if router == "always" else (lambda s: float(s.exp().max()) < t)
    expected = [reference_oracle(systems, p, consult) for p in prompts]
    assert [g["token_ids"] for g in result.generations] == expected
    assert [g["prompt_ids"] for g in result.generations] == prompts
    assert "prompt" not in result.generations[0]
    if router != "always":
        called = result.trace["s2_called"]
        assert 0 < called.sum() < len(called), "the threshold should consult System 2 only sometimes"


def test_decode_of_text_equals_decode_ids_of_its_tokens(systems):
    texts = ["Ann had 12 pens", "def add(a, b):"]
    config = DecodeConfig(method="oracle", max_new_tokens=MAX_NEW, progress=False)
    by_text = decode(systems, texts, config)
    by_ids = decode_ids(systems, [systems.tokenizer(t).input_ids for t in texts], config)
    assert [g["token_ids"] for g in by_text.generations] == [g["token_ids"] for g in by_ids.generations]
    assert [g["prompt"] for g in by_text.generations] == texts
    pd.testing.assert_frame_equal(by_text.trace, by_ids.trace)


def test_decode_ids_empty_prompt_starts_from_bos(systems):
    config = DecodeConfig(method="oracle", max_new_tokens=3, progress=False)
    result = decode_ids(systems, [[]], config)
    assert result.generations[0]["prompt_ids"] == [systems.tokenizer.bos_token_id]


# ---- proxy: the base small model's argmax where System 2's side was read ----------------------


def reference_proxy_base(systems, prompt: str, consult) -> tuple[list[int], list[int | None]]:
    """(tokens, base argmax or None) of proxy decoding, written out from its definition."""
    ids, eos, vocab = systems.tokenizer(prompt).input_ids, systems.tokenizer.eos_token_id, systems.vocab_size
    out, bases = [], []
    for _ in range(MAX_NEW):
        seq = ids + out
        tuned = next_logprobs(systems.small_tuned, seq, vocab)
        if consult(tuned):
            base = next_logprobs(systems.small, seq, vocab)
            token = int((next_logprobs(systems.large, seq, vocab) + tuned - base).argmax())
            bases.append(int(base.argmax()))
        else:
            token = int(tuned.argmax())
            bases.append(None)
        out.append(token)
        if token == eos:
            break
    return out, bases


@pytest.mark.parametrize("router,threshold", [("always", None), ("threshold:0.08", 0.08)])
def test_proxy_trace_records_base_argmax(systems, router, threshold):
    prompts = ["Tom has 3 apples.", "The quick brown fox jumps over", "Q"]
    result = decode(systems, prompts, DecodeConfig(method="proxy", router=router, max_new_tokens=MAX_NEW,
                                                   batch_size=2, progress=False))
    consult = (lambda s: True) if threshold is None else (lambda s: float(s.exp().max()) < threshold)
    for rid, prompt in enumerate(prompts):
        tokens, bases = reference_proxy_base(systems, prompt, consult)
        rows = result.trace[result.trace["request_id"] == rid]
        assert rows["token_id"].tolist() == tokens
        recorded = [None if pd.isna(b) else int(b) for b in rows["s1_base_token_id"]]
        assert recorded == bases
        assert (rows["s1_base_token_id"].notna() == rows["s2_called"]).all()
    # the base and tuned small models disagree somewhere, so the two definitions differ
    base = result.trace["s1_base_token_id"].dropna().astype(int)
    assert (base != result.trace.loc[base.index, "s1_token_id"]).any()


def test_other_methods_leave_base_argmax_null(systems):
    for method in ("oracle", "contrastive"):
        for router in ("always", "threshold:0.08"):
            result = decode(systems, ["Tom has 3 apples."], DecodeConfig(method=method, router=router,
                                                                         max_new_tokens=5, progress=False))
            assert result.trace["s1_base_token_id"].isna().all(), (method, router)


def test_trace_without_the_added_column_still_writes(systems, tmp_path):
    """A trace written before s1_base_token_id existed (or built by hand) writes and reads it as null."""
    result = decode(systems, ["Q"], DecodeConfig(method="oracle", max_new_tokens=4, progress=False))
    old = result.trace.drop(columns=["s1_base_token_id"])
    write_trace(old, tmp_path / "t.parquet", {"method": "oracle"})
    back, meta = read_trace(tmp_path / "t.parquet")
    assert back["s1_base_token_id"].isna().all() and len(back) == len(old) and meta["method"] == "oracle"
