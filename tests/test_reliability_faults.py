"""Faults during a job: no EOS, always EOS, empty / too long / non-UTF-8 prompts, OOM retries,
atomic outputs. Each test provokes the fault and checks the documented outcome."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from fsgen.decoding import engine
from fsgen.decoding.config import DecodeConfig
from fsgen.trace import to_table

pytestmark = pytest.mark.timeout(180)

METHODS = ["single", "oracle", "contrastive", "proxy", "speculative"]
PROMPTS = ["Tom has 3 apples.", "def add(a, b):", "Question: What is 9 times 8? Answer:"]


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    return {k: str(v) for k, v in build_tiny_family(tmp_path_factory.mktemp("family")).items()}


def systems_for(family, method="proxy"):
    """The systems `method` runs on: the family's (single: the large model alone)."""
    if method == "single":
        return engine.load_systems("single", model=family["large"])
    return engine.load_systems(method, small=family["small"], large=family["large"],
                               small_tuned=family["small_tuned"])


def force_eos(systems, logit: float):
    """Every model's EOS logit pinned to `logit` (-1e9: never emits EOS; +1e9: always does)."""
    eos = systems.tokenizer.eos_token_id
    for model in systems.models.values():
        if model is not None:
            def hook(module, inputs, output):
                output = output.clone()
                output[..., eos] = logit
                return output
            model.get_output_embeddings().register_forward_hook(hook)
    return eos


@pytest.mark.parametrize("method", METHODS)
def test_model_without_eos_runs_to_max_new_tokens_and_stops(family, method):
    systems = systems_for(family, method)
    eos = force_eos(systems, -1e9)
    config = DecodeConfig(method=method, max_new_tokens=9, batch_size=2)
    result = engine.decode(systems, PROMPTS, config)
    for g in result.generations:
        assert len(g["token_ids"]) == 9 and eos not in g["token_ids"]
    assert result.trace.groupby("request_id").size().tolist() == [9, 9, 9]


@pytest.mark.parametrize("method", METHODS)
def test_model_that_emits_eos_at_once_stops_after_one_token(family, method):
    systems = systems_for(family, method)
    eos = force_eos(systems, 1e9)
    result = engine.decode(systems, PROMPTS, DecodeConfig(method=method, max_new_tokens=9, batch_size=2))
    for g in result.generations:
        assert g["token_ids"] == [eos] and g["text"] == ""
    assert len(result.trace) == len(PROMPTS)


def test_empty_prompt_decodes_from_bos(family):
    systems = systems_for(family, "contrastive")
    config = DecodeConfig(method="contrastive", max_new_tokens=6, batch_size=4)
    result = engine.decode(systems, ["", PROMPTS[0], ""], config)
    bos_text = systems.tokenizer.bos_token  # tokenizes to [bos], what an empty prompt becomes
    assert systems.tokenizer(bos_text).input_ids == [systems.tokenizer.bos_token_id]
    reference = engine.decode(systems, [bos_text], config)
    assert result.generations[0]["token_ids"] == reference.generations[0]["token_ids"]
    assert result.generations[2]["token_ids"] == reference.generations[0]["token_ids"]
    assert len(result.generations[0]["token_ids"]) > 0


def test_empty_prompt_without_bos_is_a_clear_error(family):
    systems = systems_for(family, "single")
    systems.tokenizer.bos_token = None
    with pytest.raises(ValueError, match="request 7: empty prompt"):
        engine.decode(systems, ["hi", ""], DecodeConfig(method="single", max_new_tokens=3), request_ids=[6, 7])


def test_too_long_prompt_is_left_truncated_with_a_warning(family, caplog):
    systems = systems_for(family, "oracle")
    context = systems.large.config.max_position_embeddings
    config = DecodeConfig(method="oracle", router="entropy:0.5", max_new_tokens=8)
    room = context - config.max_new_tokens
    long_prompt = "Question: " + "x" * (context + 100)
    assert systems.tokenizer("x" * room).input_ids == systems.tokenizer("x").input_ids * room  # test premise
    with caplog.at_level(logging.WARNING, logger="fsgen.decoding.engine"):
        result = engine.decode(systems, [PROMPTS[0], long_prompt], config)
    assert any("request 1" in r.getMessage() and "left-truncated" in r.getMessage() for r in caplog.records)
    reference = engine.decode(systems, ["x" * room], config)  # what the truncation keeps
    assert result.generations[1]["token_ids"] == reference.generations[0]["token_ids"]
    assert len(result.generations[1]["token_ids"]) == 8


def test_budget_larger_than_the_context_is_refused(family):
    systems = systems_for(family, "single")
    context = systems.model("model").config.max_position_embeddings
    with pytest.raises(ValueError, match="leaves no room for a prompt"):
        engine.decode(systems, ["hi"], DecodeConfig(method="single", max_new_tokens=context))


def test_non_utf8_prompts_file_is_a_one_line_error(family, tmp_path, capsys):
    from fsgen.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    code = main(["decode", "--model", family["small"], "--method", "single", "--prompts", str(prompts),
                 "--max-new-tokens", "3", "--out-trace", str(tmp_path / "t.parquet"),
                 "--out-generations", str(tmp_path / "g.jsonl")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"fsgen: error: {prompts}:2: not UTF-8"
    assert not (tmp_path / "t.parquet").exists() and not (tmp_path / "g.jsonl").exists()


# ---------------------------------------------------------------- out of memory → retry


def test_attempt_batch_size_halves_on_retry():
    from fsgen.pipeline.resources import attempt_batch_size

    assert [attempt_batch_size(16, a) for a in (1, 2, 3, 4, 5, 6)] == [16, 8, 4, 2, 1, 1]


def test_oom_retry_with_smaller_batch_reuses_finished_requests_and_changes_no_number(family, tmp_path):
    """Attempt 1 runs out of memory after two batches; attempt 2 (half the batch) finishes."""
    from fsgen.decoding.resumable import decode_job_key, decode_resumable
    from fsgen.pipeline.resources import attempt_batch_size
    from fsgen.resume import ResumeCache

    systems = systems_for(family, "proxy")
    prompts = PROMPTS * 3
    attempt1 = DecodeConfig(method="proxy", max_new_tokens=6, batch_size=attempt_batch_size(4, 1), seed=5)

    def out_of_memory_after_two_batches(systems_, prompts_, config, request_ids=None, on_result=None):
        finished = []

        def counting(generation, rows):
            on_result(generation, rows)
            finished.append(generation["request_id"])
            if len(finished) == 2 * config.batch_size:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        return engine.decode(systems_, prompts_, config, request_ids=request_ids, on_result=counting)

    cache = ResumeCache(tmp_path, decode_job_key(systems, attempt1, benchmark="b"))
    with pytest.raises(torch.OutOfMemoryError):
        decode_resumable(systems, prompts, attempt1, cache, decode_fn=out_of_memory_after_two_batches)
    cache.close()
    attempt2 = DecodeConfig(method="proxy", max_new_tokens=6, batch_size=attempt_batch_size(4, 2), seed=5)
    cache = ResumeCache(tmp_path, decode_job_key(systems, attempt2, benchmark="b"))
    assert len(cache) == 8
    decoded = []

    def counting_decode(systems_, prompts_, config, request_ids=None, on_result=None):
        decoded.extend(request_ids)
        assert config.batch_size == 2
        return engine.decode(systems_, prompts_, config, request_ids=request_ids, on_result=on_result)

    retried = decode_resumable(systems, prompts, attempt2, cache, decode_fn=counting_decode)
    assert len(decoded) == len(prompts) - 8
    clean = engine.decode(systems, prompts, attempt1)
    assert retried.generations == clean.generations
    assert to_table(retried.trace).equals(to_table(clean.trace))


# ---------------------------------------------------------------- atomic outputs


def test_a_write_killed_midway_leaves_no_output(tmp_path, monkeypatch):
    """write_trace writes a temporary file and renames it: a crash leaves nothing that looks done."""
    import pyarrow.parquet as pq

    from fsgen.trace import empty_trace, write_trace

    def crashing_write(table, where, **kwargs):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("node lost")

    monkeypatch.setattr(pq, "write_table", crashing_write)
    target = tmp_path / "job" / "trace.parquet"
    with pytest.raises(OSError, match="node lost"):
        write_trace(empty_trace(), target, {"seed": 0})
    assert list(target.parent.iterdir()) == []


def test_generations_writer_is_atomic(tmp_path, monkeypatch):
    from fsgen.atomic import write_jsonl

    target = tmp_path / "g.jsonl"
    target.write_text('{"old": true}\n')

    class Boom:
        def __iter__(self):
            yield {"request_id": 0}
            raise OSError("killed")

    with pytest.raises(OSError):
        write_jsonl(target, Boom())
    assert target.read_text() == '{"old": true}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["g.jsonl"]
    assert json.loads(target.read_text()) == {"old": True}
