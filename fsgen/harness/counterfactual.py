"""Which interventions matter: counterfactual continuations of an oracle job (GPU stage).

For a seeded sample of a job's interventions (positions where System 2's token differs from
System 1's argmax), decoding continues from that position with System 1's token instead of
System 2's; everything after it is decided as in the job's own decoding (oracle with router
`always`: the large model's greedy continuation), under the request's own stop strings and token
budget. The continuation starts from token ids (`fsgen.decoding.engine.decode_ids`: the prompt
as the job read it, then the job's generated tokens before the position, then System 1's token),
so nothing is re-tokenised.

Stopping counts the whole answer: an answer whose System 1 token is EOS, completes a stop string
or reaches the budget ends there; a continuation gets the budget left after the prefix, and the
answer (prefix + continuation) is cut at the first stop of the request's `StopCriteria` over the
whole answer, so a stop string that spans the prefix and the continuation ends it where the
original request would have. Greedy decoding is deterministic, so cutting after the fact gives
the tokens decoding with the whole answer in view would have given.

The scoring stage (`fsgen.harness.counterfactual_score`) replays the answers through lm-eval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from fsgen.atomic import atomic_path

log = logging.getLogger(__name__)

METADATA_KEY = b"fsgen_counterfactual"
# what a sampled intervention carries from the trace
SAMPLE_COLUMNS = ("request_id", "position", "token_id", "s1_token_id", "s1_top1_prob", "s1_entropy")
# continuations.parquet: the sample, the request's place in lm-eval's samples, the answer
CONTINUATION_SCHEMA = pa.schema([
    ("request_id", pa.int64()),  # the trace's request_id (generations.jsonl)
    ("position", pa.int32()),  # the intervention's position among the generated tokens
    ("token_id", pa.int64()),  # System 2's token there (the job's)
    ("s1_token_id", pa.int64()),  # System 1's argmax there: the counterfactual answer's token
    ("s1_top1_prob", pa.float32()),  # System 1's confidence in it
    ("s1_entropy", pa.float32()),
    ("n_tokens", pa.int32()),  # tokens the job generated for the request
    ("task", pa.string()),  # lm-eval task, doc_id and request index of the request
    ("doc_id", pa.int64()),
    ("idx", pa.int32()),
    ("continued", pa.int32()),  # tokens decoded after System 1's token
    ("token_ids", pa.list_(pa.int64())),  # the counterfactual answer's generated ids
    ("text", pa.string()),  # its text, cut before the first stop string (the replayed response)
])


def sample_interventions(trace: pd.DataFrame, positions: int, seed: int) -> pd.DataFrame:
    """`positions` intervention rows of a trace drawn without replacement with
    `numpy.random.default_rng(seed)` (all of them when there are fewer), by (request_id, position).

    An intervention is a row with `intervened` (the token differs from System 1's argmax)."""
    if positions < 0:
        raise ValueError(f"positions must be >= 0, got {positions}")
    flags = trace["intervened"].fillna(False).to_numpy(dtype=bool)
    rows = trace[flags].sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    rows = rows[list(SAMPLE_COLUMNS)]
    if positions >= len(rows):
        return rows
    chosen = np.sort(np.random.default_rng(seed).choice(len(rows), size=positions, replace=False))
    return rows.iloc[chosen].reset_index(drop=True)


def counterfactual_requests(sample: pd.DataFrame, generations: list[dict]) -> list[dict]:
    """Per sampled intervention, what its continuation needs: the request's prompt, stop strings
    and budget (from generations.jsonl) and the answer's prefix: the job's tokens before the
    position, then System 1's token. ValueError when the trace and the generations disagree."""
    by_id = {int(g["request_id"]): g for g in generations}
    requests = []
    for row in sample.itertuples(index=False):
        generation = by_id.get(int(row.request_id))
        if generation is None:
            raise ValueError(f"request_id {row.request_id} of the trace has no generation")
        tokens = [int(t) for t in generation["token_ids"]]
        position = int(row.position)
        if position >= len(tokens) or tokens[position] != int(row.token_id):
            raise ValueError(f"request_id {row.request_id} position {position}: the trace's token "
                             f"{row.token_id} is not the generation's (trace and generations disagree)")
        requests.append({"prompt": generation["prompt"], "stop": tuple(generation["stop"]),
                         "max_new_tokens": int(generation["max_new_tokens"]),
                         "prefix": tokens[:position] + [int(row.s1_token_id)]})
    return requests


def continue_answers(systems, config, requests: list[dict], decode_fn: Callable | None = None) -> list[list[int]]:
    """The generated ids of each counterfactual answer: its prefix and the continuation decoded
    under `config` (the job's method and router), cut at the request's stop criteria.

    `decode_fn(systems, prompt_ids, config, request_ids)` -> DecodeResult (default
    `engine.decode_ids`; the job passes a resumable one). Engine request ids are the indices
    into `requests`; continuations are batched by `budget_groups`.
    """
    from fsgen.decoding import engine
    from fsgen.decoding.methods import get_method
    from fsgen.decoding.stopping import StopCriteria

    decode_fn = decode_fn or engine.decode_ids
    tokenizer = systems.tokenizer
    eos = systems.stop_token_ids(get_method(config.method).roles)
    context = engine.context_length(systems, config.method)
    stops = [StopCriteria(tokenizer, eos, r["stop"], r["max_new_tokens"]) for r in requests]
    answers: list[list[int] | None] = [None] * len(requests)
    inputs: dict[int, list[int]] = {}  # request -> prompt (as the job read it) + prefix
    for i, (request, stop) in enumerate(zip(requests, stops)):
        prefix = request["prefix"]
        ends = stop.finished_length(prefix, checked=len(prefix) - 1)  # the job's tokens before did not end it
        if ends is not None:
            answers[i] = prefix[:ends]
        else:
            inputs[i] = engine.prepare_prompt(tokenizer, request["prompt"], i, request["max_new_tokens"], context) + prefix
    for (stop_strings, budget), indices in budget_groups(requests, inputs, context).items():
        result = decode_fn(systems, [inputs[i] for i in indices], replace(config, stop=stop_strings, max_new_tokens=budget),
                           request_ids=indices)
        for i, generation in zip(indices, result.generations, strict=True):
            full = requests[i]["prefix"] + [int(t) for t in generation["token_ids"]]
            prefix_length = len(requests[i]["prefix"])
            answers[i] = full[: stops[i].finished_length(full, checked=prefix_length - 1) or len(full)]
    return answers


def budget_groups(requests: list[dict], inputs: dict[int, list[int]], context: int | None) -> dict[tuple, list[int]]:
    """(stop strings, token budget) -> the continuations decoded together.

    One group per stop strings, decoded with the largest budget left among them (each answer is
    cut at its own budget afterwards: greedy tokens do not depend on the budget, and most
    continuations end at EOS or a stop string long before it), so continuations batch well. A
    continuation whose input would then not fit the context (decode would left-truncate it)
    keeps its own budget left, in its own group.
    """
    left = {i: requests[i]["max_new_tokens"] - len(requests[i]["prefix"]) for i in inputs}
    largest: dict[tuple, int] = {}
    for i in inputs:
        key = requests[i]["stop"]
        largest[key] = max(largest.get(key, 0), left[i])
    groups: dict[tuple, list[int]] = {}
    for i, ids in inputs.items():
        stop, budget = requests[i]["stop"], largest[requests[i]["stop"]]
        if context is not None and len(ids) + budget > context:
            budget = left[i]
        groups.setdefault((stop, budget), []).append(i)
    return groups


def continuation_frame(sample: pd.DataFrame, generations: list[dict], requests: list[dict],
                       answers: list[list[int]], tokenizer) -> pd.DataFrame:
    """continuations.parquet's rows (CONTINUATION_SCHEMA) from the sample and its answers; an
    answer's text is cut before the first stop string, as the job's responses are."""
    from fsgen.decoding.stopping import StopCriteria

    by_id = {int(g["request_id"]): g for g in generations}
    rows = []
    for row, request, answer in zip(sample.to_dict("records"), requests, answers, strict=True):
        generation = by_id[int(row["request_id"])]
        stop = StopCriteria(tokenizer, (), request["stop"], request["max_new_tokens"])  # text only
        rows.append({**row, "n_tokens": len(generation["token_ids"]), "task": generation["task"],
                     "doc_id": int(generation["doc_id"]), "idx": int(generation["idx"]),
                     "continued": len(answer) - len(request["prefix"]), "token_ids": answer,
                     "text": stop.text(answer)})
    return pa.Table.from_pylist(rows, schema=CONTINUATION_SCHEMA).to_pandas()


# ------------------------------------------------------------------------------- files


def write_frame(frame: pd.DataFrame, path, metadata: dict, schema: pa.Schema) -> None:
    """A Parquet file of `frame` cast to `schema`, with `metadata` (JSON) under METADATA_KEY, atomically."""
    import json

    table = pa.Table.from_pandas(frame[schema.names], preserve_index=False, schema=schema) if len(frame) \
        else schema.empty_table()
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(metadata, default=str).encode()})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def read_frame(path) -> tuple[pd.DataFrame, dict]:
    """(rows, metadata) of a file written by `write_frame`."""
    import json

    table = pq.read_table(path)
    raw = (table.schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise ValueError(f"{path}: not a counterfactual file (no {METADATA_KEY.decode()} metadata)")
    return table.to_pandas(), json.loads(raw)


def read_jsonl(path) -> list[dict]:
    import json

    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def skip_reason(metrics_path) -> str | None:
    """Why a job's interventions cannot be judged by outcome (None when they can): its task has
    no accuracy metric (e.g. MT-Bench's generation-only metrics)."""
    from fsgen.analysis.stats import metric_status, read_metrics

    status = metric_status(read_metrics(metrics_path))
    return None if status == "ok" else status


def run_counterfactual_decode(trace_path, generations_path, metrics_path, out_path, *, settings: dict,
                              positions: int, seed: int, load: Callable, cache_dir=None, job: dict | None = None) -> dict:
    """The GPU stage of one oracle job: sample, continue, write continuations.parquet.

    settings: the job's DecodeConfig settings (its method and router); load() -> (systems,
    batch size), called only when there is something to decode; cache_dir: the resume cache
    folder (finished continuations survive a killed job), keyed by the models, the settings,
    the decoding code and `job` (the job's identity). Returns the file's metadata: `status`
    "ok" or "skipped" and its `reason`, `positions`, `seed`, `interventions` (in the trace).
    """
    from fsgen.decoding.config import DecodeConfig
    from fsgen.trace import read_trace

    trace, _ = read_trace(trace_path)
    meta = {"status": "ok", "reason": None, "positions": int(positions), "seed": int(seed),
            "interventions": int(trace["intervened"].fillna(False).sum()), "job": job, "decode": dict(settings)}
    reason = skip_reason(metrics_path)
    if reason is not None:
        log.info("counterfactual continuations skipped: %s", reason)
        write_frame(pd.DataFrame(), out_path, {**meta, "status": "skipped", "reason": reason}, CONTINUATION_SCHEMA)
        return {**meta, "status": "skipped", "reason": reason}
    generations = read_jsonl(generations_path)
    sample = sample_interventions(trace, positions, seed)
    requests = counterfactual_requests(sample, generations)
    frame = pd.DataFrame()
    if requests:
        systems, batch_size = load()
        config = DecodeConfig.from_settings(settings, batch_size=batch_size, progress=False)
        answers = _continue_cached(systems, config, requests, cache_dir, job)
        frame = continuation_frame(sample, generations, requests, answers, systems.tokenizer)
        meta["models"] = dict(systems.names)
    log.info("%d of %d interventions continued with System 1's token", len(frame), meta["interventions"])
    write_frame(frame, out_path, meta, CONTINUATION_SCHEMA)
    return meta


def _continue_cached(systems, config, requests, cache_dir, job):
    """continue_answers, through the resume cache when `cache_dir` is given."""
    if cache_dir is None:
        return continue_answers(systems, config, requests)
    from fsgen.decoding import engine
    from fsgen.decoding.resumable import decode_resumable, open_job_cache

    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with open_job_cache(cache_dir, systems, config, job=job) as cache:
        def cached(systems_, prompt_ids, config_, request_ids):
            return decode_resumable(systems_, prompt_ids, config_, cache, request_ids=request_ids,
                                    decode_fn=engine.decode_ids)

        return continue_answers(systems, config, requests, decode_fn=cached)
