"""The resume cache on its own: keys, isolation, torn lines, SIGKILL mid-write, one writer."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fsgen.decoding.resumable import decode_job_key, decode_resumable
from fsgen.fingerprint import model_fingerprint
from fsgen.resume import CacheLocked, ResumeCache, job_key, request_key
from fsgen.trace import TraceMismatch, check_trace_matches
from fsgen.testing import write_generation_task

pytestmark = pytest.mark.timeout(120)


def fake_model(folder: Path, weights: bytes = b"w" * 100) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "llama"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").write_text('{"vocab": 1}')
    return folder


def test_model_fingerprint_follows_every_file(tmp_path):
    base = model_fingerprint(str(fake_model(tmp_path / "a")))
    assert model_fingerprint(str(fake_model(tmp_path / "copy"))) == base  # content, not path
    for name, content in [("config.json", '{"model_type": "qwen2"}'), ("tokenizer.json", '{"vocab": 2}'),
                          ("model.safetensors", "v" * 100)]:
        other = fake_model(tmp_path / f"changed-{name}")
        (other / name).write_text(content)
        assert model_fingerprint(str(other)) != base, name
    hidden = fake_model(tmp_path / "hidden")
    (hidden / ".cache").mkdir()
    (hidden / ".cache" / "x").write_text("lock")
    assert model_fingerprint(str(hidden)) == base


def test_model_fingerprint_of_large_weights_reads_both_ends(tmp_path):
    big = bytearray(5 << 20)
    a = model_fingerprint(str(fake_model(tmp_path / "a", bytes(big))))
    big[-1] = 1  # a change in the last MiB
    b = model_fingerprint(str(fake_model(tmp_path / "b", bytes(big))))
    big2 = bytearray(5 << 20)
    big2[10] = 1  # a change in the first MiB
    c = model_fingerprint(str(fake_model(tmp_path / "c", bytes(big2))))
    assert len({a, b, c}) == 3


def test_model_fingerprint_errors_and_hub_ids(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        model_fingerprint(str(tmp_path / "empty"))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    unresolved = model_fingerprint("org/model")
    refs = tmp_path / "hub" / "models--org--model" / "refs"
    refs.mkdir(parents=True)
    (refs / "main").write_text("a" * 40)
    first = model_fingerprint("org/model")
    (refs / "main").write_text("b" * 40)
    second = model_fingerprint("org/model")
    assert len({unresolved, first, second}) == 3
    assert model_fingerprint("org/other") != unresolved


def test_keys_are_stable_and_sensitive():
    parts = dict(models={"small": "abc", "large": "def"}, method="contrastive", params={"beta": 0.5}, task="gsm8k")
    reordered = dict(task="gsm8k", params={"beta": 0.5}, method="contrastive", models={"large": "def", "small": "abc"})
    assert job_key(**parts) == job_key(**reordered)
    assert job_key(**parts) != job_key(**dict(parts, method="proxy"))
    assert job_key(**parts) != job_key(**dict(parts, params={"beta": 0.25}))
    assert job_key(**parts) != job_key(**dict(parts, models={"small": "abc", "large": "xyz"}))
    assert request_key("2+2=", max_new_tokens=8) == request_key("2+2=", max_new_tokens=8)
    assert request_key("2+2=", max_new_tokens=8) != request_key("2+3=", max_new_tokens=8)
    assert request_key("2+2=", max_new_tokens=8) != request_key("2+2=", max_new_tokens=9)
    with pytest.raises(ValueError):
        job_key()
    with pytest.raises(TypeError, match="cache key"):
        job_key(model=object())


def test_put_get_roundtrip_across_processes_lifetimes(tmp_path):
    key = job_key(method="oracle")
    with ResumeCache(tmp_path, key, parts={"method": "oracle"}) as cache:
        assert len(cache) == 0 and cache.get("r1") is None
        cache.put("r1", {"text": "héllo\n", "token_ids": [1, 2], "p": float("nan")})
        cache.put("r2", {"text": "", "token_ids": []})
    again = ResumeCache(tmp_path, key)
    assert len(again) == 2 and again.loaded == 2
    assert again.get("r1")["text"] == "héllo\n" and again.get("r2") == {"text": "", "token_ids": []}
    assert json.loads((tmp_path / key / "key.json").read_text())["parts"] == {"method": "oracle"}
    assert again.stats() == {"loaded": 2, "hits": 2, "misses": 0, "puts": 0}


def test_two_jobs_never_see_each_others_records(tmp_path):
    keys = [job_key(method="contrastive", pair="l__s"), job_key(method="proxy", pair="l__s"),
            job_key(method="contrastive", pair="l2__s"), job_key(method="contrastive", pair="l__s", beta=0.1)]
    assert len(set(keys)) == 4
    caches = [ResumeCache(tmp_path, k) for k in keys]
    for i, cache in enumerate(caches):
        cache.put("same-request", {"job": i})
    for i, key in enumerate(keys):
        fresh = ResumeCache(tmp_path, key)
        assert len(fresh) == 1 and fresh.get("same-request") == {"job": i}
    assert ResumeCache(tmp_path, job_key(method="oracle")).get("same-request") is None


def test_torn_last_line_is_ignored_then_cut_before_appending(tmp_path):
    key = job_key(method="oracle")
    with ResumeCache(tmp_path, key) as cache:
        cache.put("a", {"n": 1})
        cache.put("b", {"n": 2})
    path = tmp_path / key / "records.jsonl"
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"request_key":"c","record":{"n":')  # killed mid-write
    cache = ResumeCache(tmp_path, key)
    assert len(cache) == 2 and cache.get("c") is None
    cache.put("c", {"n": 3})
    cache.close()
    lines = path.read_bytes().splitlines(keepends=True)
    assert [json.loads(line)["request_key"] for line in lines] == ["a", "b", "c"]
    assert all(line.endswith(b"\n") for line in lines)


def test_one_writer_per_job(tmp_path):
    key = job_key(method="oracle")
    first = ResumeCache(tmp_path, key)
    first.put("a", {})
    second = ResumeCache(tmp_path, key)
    with pytest.raises(CacheLocked, match="same job running twice"):
        second.put("b", {})
    first.close()
    second.put("b", {})
    second.close()


def test_rejects_keys_that_are_not_digests(tmp_path):
    with pytest.raises(ValueError, match="hex digest"):
        ResumeCache(tmp_path, "../escape")


WRITER = textwrap.dedent(
    """
    import hashlib, sys
    from fsgen.resume import ResumeCache
    cache = ResumeCache(sys.argv[1], sys.argv[2])
    i = len(cache)
    while True:
        payload = str(i) * (int(sys.argv[3]) // max(1, len(str(i))))
        cache.put(f"req-{i}", {"i": i, "payload": payload, "sha": hashlib.sha256(payload.encode()).hexdigest()})
        print(i, flush=True)
        i += 1
    """
)


def run_writer_until(tmp_path, key, record_bytes, at_least):
    """Start a writer subprocess, SIGKILL it once it has reported `at_least` records."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), key, str(record_bytes)],
                            stdout=subprocess.PIPE, text=True)
    reported = -1
    while reported < at_least - 1:
        line = proc.stdout.readline()
        assert line, "writer died"
        reported = int(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return reported + 1


@pytest.mark.parametrize("record_bytes", [100, 4 << 20])
def test_sigkill_mid_write_leaves_only_complete_records(tmp_path, record_bytes):
    """Big records make a kill inside a write likely; every record read back must be whole."""
    key = job_key(test="sigkill", size=record_bytes)
    total = 0
    for round_ in range(3):
        acknowledged = run_writer_until(tmp_path, key, record_bytes, at_least=total + 3)
        cache = ResumeCache(tmp_path, key)
        # every put() that returned is durable; at most the in-flight one is missing or extra
        assert len(cache) >= acknowledged
        assert sorted(cache.records) == sorted(f"req-{i}" for i in range(len(cache)))
        for record in cache.records.values():
            assert hashlib.sha256(record["payload"].encode()).hexdigest() == record["sha"]
        total = len(cache)
    assert total >= 9


def assert_traces_close(a, b, tol=1e-5):
    """Tokens, ids, decisions identical; float32 probabilities/entropies within tol (abs + rel).

    A resumed run decodes the remaining requests in other batches than an uninterrupted one, and
    float32 reductions over other padded shapes round differently in the last bits.
    """
    import numpy as np
    import pandas as pd

    from fsgen.trace import to_table

    x, y = to_table(a).to_pandas(), to_table(b).to_pandas()
    assert list(x.columns) == list(y.columns) and len(x) == len(y)
    for col in x.columns:
        if pd.api.types.is_float_dtype(x[col]):
            assert np.allclose(x[col], y[col], rtol=tol, atol=tol, equal_nan=True), col
        else:
            assert x[col].tolist() == y[col].tolist(), col


# ---------------------------------------------------------------- end to end through the engine

PROMPTS = [f"Question: What is {a} times {b}? Answer:" for a, b in [(9, 8), (3, 4), (6, 7), (2, 5)]] + [
    "Tom has 3 apples.", "", "def add(a, b):", "The quick brown fox", "Ann had 12 pens", "A box holds 6 eggs."]
CONFIG = dict(method="contrastive", max_new_tokens=10, batch_size=2, seed=3)

KILLED_DECODE = textwrap.dedent(
    """
    import json, sys, torch
    torch.set_num_threads(1)
    from fsgen.decoding import engine
    from fsgen.decoding.config import DecodeConfig
    from fsgen.decoding.resumable import decode_job_key, decode_resumable
    from fsgen.resume import ResumeCache
    family, cache_dir, prompts, config = json.loads(sys.argv[1])
    systems = engine.load_systems(config["method"], small=family["small"], large=family["large"])
    config = DecodeConfig(**config)

    class Reporting(ResumeCache):
        def put(self, key, record):
            super().put(key, record)
            print("finished", len(self), flush=True)

    cache = Reporting(cache_dir, decode_job_key(systems, config, task="t"))
    decode_resumable(systems, prompts, config, cache)
    print("done", flush=True)
    """
)


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    import torch

    from fsgen.testing import build_tiny_family

    torch.set_num_threads(1)
    return {k: str(v) for k, v in build_tiny_family(tmp_path_factory.mktemp("family")).items()}


def counting_decode(calls: list):
    from fsgen.decoding import engine

    def decode(systems, prompts, config, request_ids=None, on_result=None):
        calls.extend(request_ids)
        return engine.decode(systems, prompts, config, request_ids=request_ids, on_result=on_result)

    return decode


def test_killed_decode_resumes_without_recomputing(tmp_path, family):
    from fsgen.decoding import engine
    from fsgen.decoding.config import DecodeConfig

    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_DECODE, json.dumps([family, str(cache_dir), PROMPTS, CONFIG])],
        stdout=subprocess.PIPE, text=True)
    finished = 0
    while finished < 4:  # two batches of two
        line = proc.stdout.readline()
        assert line.startswith("finished"), f"decode subprocess ended early: {line!r}"
        finished = int(line.split()[1])
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    systems = engine.load_systems("contrastive", small=family["small"], large=family["large"])
    config = DecodeConfig(**CONFIG)
    cache = ResumeCache(cache_dir, decode_job_key(systems, config, task="t"))
    done_before = set(cache.records)
    assert 4 <= len(done_before) < len(PROMPTS)
    calls = []
    resumed = decode_resumable(systems, PROMPTS, config, cache, decode_fn=counting_decode(calls))
    assert len(calls) == len(PROMPTS) - len(done_before)  # none of the finished ones recomputed
    assert cache.stats()["puts"] == len(calls)

    uninterrupted = engine.decode(systems, PROMPTS, config)
    assert resumed.generations == uninterrupted.generations
    assert_traces_close(resumed.trace, uninterrupted.trace)
    assert resumed.metadata == uninterrupted.metadata

    again = []  # a third run decodes nothing
    decode_resumable(systems, PROMPTS, config, ResumeCache(cache_dir, cache.key), decode_fn=counting_decode(again))
    assert again == []


def test_other_jobs_do_not_reuse_results(tmp_path, family):
    from fsgen.decoding import engine
    from fsgen.decoding.config import DecodeConfig

    systems = engine.load_systems("proxy", small=family["small"], large=family["large"],
                                  small_tuned=family["small_tuned"])
    base = DecodeConfig(**CONFIG)
    decode_resumable(systems, PROMPTS[:3], base, ResumeCache(tmp_path, decode_job_key(systems, base, task="t")))
    swapped = engine.Systems(systems.tokenizer, models={"small": systems.large, "large": systems.small},
                             names={"small": family["large"], "large": family["small"]}, vocab_size=systems.vocab_size)
    others = [
        (systems, DecodeConfig(**dict(CONFIG, method="proxy")), "t"),
        (systems, DecodeConfig(**dict(CONFIG, beta=0.25)), "t"),
        (systems, DecodeConfig(**dict(CONFIG, router="entropy:0.5")), "t"),
        (systems, base, "other-task"),
        (swapped, base, "t"),
    ]
    keys = {decode_job_key(systems, base, task="t")}
    for other_systems, config, task in others:
        key = decode_job_key(other_systems, config, task=task)
        assert key not in keys
        keys.add(key)
        calls = []
        decode_resumable(other_systems, PROMPTS[:3], config, ResumeCache(tmp_path, key), decode_fn=counting_decode(calls))
        assert len(calls) == 3, config
    # batch size is not part of the key: an out-of-memory retry reuses everything
    smaller = DecodeConfig(**dict(CONFIG, batch_size=1))
    assert decode_job_key(systems, smaller, task="t") == decode_job_key(systems, base, task="t")


def test_trace_mismatch_is_an_error():
    import pandas as pd

    generations = [{"request_id": 0, "token_ids": [5, 6]}, {"request_id": 1, "token_ids": [7]}]
    good = pd.DataFrame({"request_id": [0, 0, 1], "position": [0, 1, 0]})
    check_trace_matches(generations, good)
    with pytest.raises(TraceMismatch, match="request_id 1: 0 trace rows for 1"):
        check_trace_matches(generations, good.iloc[:2])
    with pytest.raises(TraceMismatch, match="no generation"):
        check_trace_matches(generations[:1], good)
    with pytest.raises(TraceMismatch, match="duplicate"):
        check_trace_matches(generations + generations[:1], good)


# ---------------------------------------------------------------- end to end through the harness


HARNESS_DECODE = textwrap.dedent(
    """
    import json, sys, time, torch
    torch.set_num_threads(1)
    from fsgen.decoding import engine
    slow = len(sys.argv) > 2
    real_decode = engine.decode

    def decode(systems, prompts, config, request_ids=None, on_result=None):
        def finished(generation, rows):  # a slow GPU: time to kill the job between requests
            if on_result is not None:
                on_result(generation, rows)
            if slow:
                time.sleep(0.4)
        return real_decode(systems, prompts, config, request_ids=request_ids, on_result=finished)

    engine.decode = decode
    from fsgen.harness.run import run_decode
    benchmark, entry, model_args, out_dir, include = json.loads(sys.argv[1])
    run_decode(benchmark, entry, model_args, out_dir, include_path=include)
    """
)


def harness_has_resume() -> bool:
    import inspect

    from fsgen.harness.lm import FsgenLM

    return "resume_dir" in inspect.signature(FsgenLM.__init__).parameters


@pytest.mark.slow
@pytest.mark.timeout(900)  # a harness decode killed and resumed: ~70 s quiet, 2-3x on a busy machine
def test_killed_harness_decode_resumes(tmp_path, family):
    """run_decode of 12 requests killed after some finished; the rerun computes only the rest."""
    if not harness_has_resume():
        pytest.skip("fsgen.harness.lm.FsgenLM has no resume_dir model arg yet (see docs/reliability.md)")
    import time

    from fsgen.trace import read_trace

    rows = [{"question": f"{a} + {b}?", "answer": str(a + b)} for a in range(4) for b in range(3)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    include = tmp_path / "tasks"
    include.mkdir()
    write_generation_task(include, "resume_gen", tmp_path / "d.jsonl")
    entry = {"task": "resume_gen", "seed": 1, "max_new_tokens": 6, "batch_size": 2}

    def args(out_dir, cache_dir):
        model_args = {"large": family["large"], "small": family["small"], "method": "contrastive",
                      "resume_dir": str(cache_dir)}
        return json.dumps(["resume", entry, model_args, str(out_dir), str(include)])

    cache_dir = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-c", HARNESS_DECODE, args(tmp_path / "job", cache_dir), "slow"])
    records = lambda: sum(len(p.read_bytes().splitlines()) for p in cache_dir.glob("*/records.jsonl"))  # noqa: E731
    deadline = time.monotonic() + 120
    while records() < 3 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = records()
    assert 3 <= finished < len(rows), f"{finished} of {len(rows)} finished before the kill"
    assert not (tmp_path / "job" / "trace.parquet").exists()

    subprocess.run([sys.executable, "-c", HARNESS_DECODE, args(tmp_path / "job", cache_dir)], check=True)
    lines = [json.loads(x) for p in cache_dir.glob("*/records.jsonl") for x in p.read_text().splitlines()]
    keys = [x["request_key"] for x in lines]
    assert len(keys) == len(rows) and len(set(keys)) == len(rows)  # nothing recomputed, nothing missing

    subprocess.run([sys.executable, "-c", HARNESS_DECODE, args(tmp_path / "clean", tmp_path / "cache2")], check=True)
    (resumed, _), (clean, _) = read_trace(tmp_path / "job" / "trace.parquet"), read_trace(tmp_path / "clean" / "trace.parquet")
    assert_traces_close(resumed, clean)
    for name in ("generations.jsonl", "samples.jsonl"):
        assert (tmp_path / "job" / name).read_text() == (tmp_path / "clean" / name).read_text(), name
