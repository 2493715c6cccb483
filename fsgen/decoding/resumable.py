"""A resumable `decode`: requests already in a job's resume cache are not decoded again.

The job key (`decode_job_parts`, hashed by `fsgen.resume.job_key`) covers everything that
determines a job's tokens and trace except what varies per request: each model's path and
fingerprint, the DecodeConfig (without batch size: rows do not depend on it; without stop strings
and token budget: they are in the request key), a digest of the decoding code (the files of
`fsgen.fingerprint.DECODE_CODE`, the decode rule's code inputs), the versions of fsgen, torch,
transformers and lm-eval, and what else defines the job (lm-eval task names, the workflow job's
identity). The request key covers the prompt, its id (sampling seeds use it), stop strings and
token budget. Another code or library version therefore opens another folder: a cache is only
ever reused by a later attempt of the same job under the same code.
"""

from __future__ import annotations

import logging

import pandas as pd
import pyarrow as pa

from fsgen.decoding import engine
from fsgen.fingerprint import decode_environment, jsonable, model_fingerprint
from fsgen.resume import ResumeCache, job_key, request_key
from fsgen.trace import arrow_schema, check_trace_matches, empty_trace

log = logging.getLogger(__name__)


def decode_request_key(prompt: str, request_id: int, config) -> str:
    """The cache key of one engine request: prompt, id (sampling seeds use it), stops, budget."""
    return request_key(prompt, request_id=int(request_id), stop=list(config.stop),
                       max_new_tokens=int(config.max_new_tokens))


# DecodeConfig fields left out of the job key: batch size and progress do not change a row; stop
# strings and the token budget are per request (lm-eval sets them per task), in the request key.
NOT_IN_JOB_KEY = ("batch_size", "progress", "stop", "max_new_tokens")


def decode_job_parts(systems, config, **job) -> dict:
    """What a decode job's results depend on, as plain data (a cache folder's key.json "parts").

    Batch size is left out on purpose: rows do not depend on it (the engine's batch-equivalence
    guarantee), so an out-of-memory retry with a smaller batch reuses every finished request.
    `job` adds what else defines the job (lm-eval task names, the workflow job's identity, ...).
    """
    decode = {k: v for k, v in jsonable(config).items() if k not in NOT_IN_JOB_KEY}
    environment = decode_environment()
    taken = {"models", "decode", *environment} & set(job)
    if taken:
        raise ValueError(f"decode_job_parts: {sorted(taken)} are computed here, not given")
    models = {role: {"path": str(path), "fingerprint": model_fingerprint(path)}
              for role, path in sorted(systems.names.items())}
    return {"models": models, "decode": decode, **environment, **job}


def decode_job_key(systems, config, **job) -> str:
    """job_key over `decode_job_parts`."""
    return job_key(**decode_job_parts(systems, config, **job))


def open_job_cache(cache_dir, systems, config, **job) -> ResumeCache:
    """The job's ResumeCache under `cache_dir`; a new folder gets a key.json with its parts."""
    parts = decode_job_parts(systems, config, **job)
    return ResumeCache(cache_dir, job_key(**parts), parts=parts)


def _to_record(generation: dict, rows) -> dict:
    """JSON-safe record of one finished request (trace rows without request_id)."""
    rows = rows.drop(columns=["request_id"]).reset_index(drop=True)
    return {"text": generation["text"], "token_ids": [int(t) for t in generation["token_ids"]],
            "trace": pa.Table.from_pandas(rows, preserve_index=False).to_pylist()}


def _from_record(record: dict, prompt: str, request_id: int, with_topk: bool):
    """(generation, trace rows) of a cached request, typed by the trace schema."""
    generation = {"request_id": request_id, "prompt": prompt, "text": record["text"],
                  "token_ids": list(record["token_ids"])}
    schema = arrow_schema(with_topk)
    rows = [{"request_id": request_id, **row} for row in record["trace"]]
    table = pa.Table.from_pylist(rows, schema=schema) if rows else schema.empty_table()
    return generation, table.to_pandas()


def decode_resumable(systems, prompts: list[str], config, cache: ResumeCache,
                     request_ids: list[int] | None = None, decode_fn=None):
    """`fsgen.decoding.engine.decode` that skips requests already in `cache` and caches each new one.

    Every request's output - fresh or cached - is assembled from its cache record. A resumed run's
    generations (tokens, text) and every decision in its trace equal an uninterrupted run's; the
    recorded float32 probabilities/entropies of requests decoded in other batches than before
    may differ in the last bits (1e-5, the engine's batch guarantee). `decode_fn` (default
    engine.decode) is for tests that count engine calls; `cache.stats()` says how many were reused.
    """
    decode_fn = decode_fn or engine.decode
    ids = list(range(len(prompts))) if request_ids is None else [int(r) for r in request_ids]
    if len(ids) != len(prompts):
        raise ValueError(f"{len(ids)} request_ids for {len(prompts)} prompts")
    keys = [decode_request_key(p, rid, config) for p, rid in zip(prompts, ids)]
    todo = [i for i, key in enumerate(keys) if cache.get(key) is None]
    key_of_id = {ids[i]: keys[i] for i in todo}
    if todo:
        def on_result(generation: dict, rows) -> None:
            cache.put(key_of_id[int(generation["request_id"])], _to_record(generation, rows))

        decode_fn(systems, [prompts[i] for i in todo], config, request_ids=[ids[i] for i in todo],
                  on_result=on_result)
    missing = [ids[i] for i, key in enumerate(keys) if key not in cache]
    if missing:
        raise RuntimeError(f"decode finished without results for request_ids {missing[:10]} (on_result not called?)")
    log.info("resume cache %s: %d of %d requests reused, %d decoded", cache.folder,
             len(prompts) - len(todo), len(prompts), len(todo))
    pairs = [_from_record(cache.records[key], p, rid, config.top_k > 0) for key, p, rid in zip(keys, prompts, ids)]
    generations = [g for g, _ in pairs]
    frames = [f for _, f in pairs if len(f)]
    trace = pd.concat(frames, ignore_index=True) if frames else empty_trace(config.top_k > 0)
    trace = trace.sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    check_trace_matches(generations, trace)
    return engine.DecodeResult(generations=generations, trace=trace, metadata=engine.run_metadata(systems, config))
