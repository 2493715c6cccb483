"""Which interventions matter: each counterfactual answer scored with the task's own metric (CPU stage).

The answers of `fsgen.harness.counterfactual` are scored by lm-eval itself, through the replay
model: a copy of the job's samples.jsonl whose response of the request is the counterfactual
answer's text is replayed (`fsgen.harness.run.replay_model`), so lm-eval applies the task's
filters and metrics, code execution included. lm-eval scores one response per document per
run, so the answers are scored in rounds: round r replaces the r-th answer of each document
(by position), the other documents keep the job's responses.

An answer's outcome is the task's primary metric for its document (`fsgen.analysis.cost.
request_correctness`, the per-document value the job's accuracy averages); the outcome before is
the job's own (its score job's scored_samples.jsonl). An intervention is *critical* when the
outcome changes.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from pathlib import Path

import pandas as pd
import pyarrow as pa

from fsgen.harness.counterfactual import CONTINUATION_SCHEMA, read_frame, read_jsonl, write_frame

log = logging.getLogger(__name__)

# counterfactual.parquet: the continuation's columns but its ids, and the outcomes
OUTCOME_SCHEMA = pa.schema(
    [f for f in CONTINUATION_SCHEMA if f.name != "token_ids"]
    + [("outcome_before", pa.float64()),  # the task's primary metric for the document, as the job answered
       ("outcome_after", pa.float64()),  # the same with the counterfactual answer
       ("critical", pa.bool_())]  # the outcome changed
)


def response_slots(generations: list[dict]) -> dict[int, tuple[str, int, int, int]]:
    """request_id -> (task, doc_id, request idx, copy): where its response sits in samples.jsonl
    (`resps[idx][copy]`; copies are a task's repeats, answered in request_id order)."""
    seen: dict[tuple, int] = defaultdict(int)
    slots = {}
    for generation in sorted(generations, key=lambda g: int(g["request_id"])):
        key = (generation["task"], int(generation["doc_id"]), int(generation["idx"]))
        slots[int(generation["request_id"])] = (*key, seen[key])
        seen[key] += 1
    return slots


def with_responses(samples: list[dict], slots: dict, answers: dict[int, str]) -> list[dict]:
    """Copies of samples.jsonl's records in which each request of `answers` (request_id -> text)
    answers with that text; every record of its document (one per filter) is changed."""
    changes = defaultdict(list)  # (task, doc_id) -> [(idx, copy, text)]
    for request_id, text in answers.items():
        task, doc_id, idx, copy = slots[int(request_id)]
        changes[(task, doc_id)].append((idx, copy, text))
    out = []
    for sample in samples:
        todo = changes.get((sample["task"], int(sample["doc_id"])))
        if todo:
            sample = {**sample, "resps": [list(r) for r in sample["resps"]]}
            for idx, copy, text in todo:
                sample["resps"][idx][copy] = text
        out.append(sample)
    return out


def scoring_rounds(answers: pd.DataFrame) -> list[pd.DataFrame]:
    """The answers split so that each round changes at most one response per document: round r
    holds the r-th answer (by position) of each document."""
    if not len(answers):
        return []
    ordered = answers.sort_values(["task", "doc_id", "position"], kind="stable")
    rank = ordered.groupby(["task", "doc_id"], sort=False).cumcount().to_numpy()
    return [ordered[rank == r] for r in range(int(rank.max()) + 1)]


def request_outcomes(generations_path, scored_samples: list[dict]) -> pd.Series:
    """request_id -> the primary metric of its document in lm-eval's scored samples."""
    from fsgen.analysis.cost import request_correctness
    from fsgen.atomic import write_jsonl

    with tempfile.TemporaryDirectory(prefix="fsgen-counterfactual-") as tmp:
        path = Path(tmp) / "scored_samples.jsonl"
        write_jsonl(path, scored_samples, default=_jsonable)
        frame = request_correctness(generations_path, path)
    return frame.set_index("request_id")["correct"]


def _jsonable(value):
    from lm_eval.utils import handle_non_serializable

    return handle_non_serializable(value)


def replay_scores(benchmark: str, entry: dict, samples: list[dict], chat_record, generations_path, *,
                  include_path=None, tasks_dir=None) -> pd.Series:
    """request_id -> outcome, from one lm-eval run replaying `samples` (no bootstrap)."""
    from fsgen.harness.run import evaluate_benchmark, replay_model, samples_rows

    lm = replay_model(benchmark, entry, samples, chat_record)
    with tempfile.TemporaryDirectory(prefix="fsgen-counterfactual-") as work:
        results, _ = evaluate_benchmark(lm, benchmark, entry, work, predict_only=False, include_path=include_path,
                                        tasks_dir=tasks_dir, bootstrap_iters=0)
    return request_outcomes(generations_path, samples_rows(results))


def score_answers(benchmark: str, entry: dict, answers: pd.DataFrame, samples_path, generations_path,
                  scored_samples_path, *, include_path=None, tasks_dir=None) -> pd.DataFrame:
    """The answers (continuations.parquet rows) with outcome_before, outcome_after and critical."""
    from fsgen.harness.run import decode_run_info
    from fsgen.harness.tasks import benchmark_entry

    entry = benchmark_entry(benchmark, entry)
    generations = read_jsonl(generations_path)
    before = request_outcomes(generations_path, read_jsonl(scored_samples_path))
    samples, slots = read_jsonl(samples_path), response_slots(generations)
    chat = decode_run_info(samples_path).get("chat_template")
    scored = []
    for number, batch in enumerate(scoring_rounds(answers)):
        texts = dict(zip(batch["request_id"].astype(int), batch["text"]))
        after = replay_scores(benchmark, entry, with_responses(samples, slots, texts), chat, generations_path,
                              include_path=include_path, tasks_dir=tasks_dir)
        unchanged = before.drop(index=list(texts))
        drift = int((after.reindex(unchanged.index) != unchanged).sum())
        if drift:  # a metric that is not a function of the response (timeouts of executed code?)
            log.warning("round %d: %d documents that kept their response scored otherwise than in the job",
                        number, drift)
        scored.append(batch.assign(outcome_before=batch["request_id"].map(before).to_numpy(),
                                   outcome_after=batch["request_id"].map(after).to_numpy()))
        log.info("round %d: %d answers scored", number, len(batch))
    if not scored:
        return pd.DataFrame(columns=OUTCOME_SCHEMA.names)
    out = pd.concat(scored).sort_values(["request_id", "position"], kind="stable").reset_index(drop=True)
    out["critical"] = out["outcome_before"] != out["outcome_after"]
    return out


def run_counterfactual_score(benchmark: str, entry: dict, continuations_path, samples_path, generations_path,
                             metrics_path, out_path, *, include_path=None, tasks_dir=None) -> dict:
    """The CPU stage of one oracle job: counterfactual.parquet (OUTCOME_SCHEMA) from
    continuations.parquet, the job's samples/generations and its score job's scored_samples.jsonl
    (beside `metrics_path`). A skipped GPU stage (no accuracy metric) gives an empty file with
    its status. Returns the file's metadata (the continuations' plus `rounds` and `critical`)."""
    answers, meta = read_frame(continuations_path)
    rounds = 0
    if meta.get("status") == "ok" and len(answers):
        scored_samples = Path(metrics_path).with_name("scored_samples.jsonl")
        rounds = len(scoring_rounds(answers))
        answers = score_answers(benchmark, entry, answers, samples_path, generations_path, scored_samples,
                                include_path=include_path, tasks_dir=tasks_dir)
    else:
        answers = pd.DataFrame(columns=OUTCOME_SCHEMA.names)
    meta = {**meta, "rounds": rounds, "critical": int(answers["critical"].sum()) if len(answers) else 0,
            "metric": "the task's primary metric per document (fsgen.analysis.cost.request_correctness)"}
    write_frame(answers, out_path, meta, OUTCOME_SCHEMA)
    log.info("%s: %d of %d counterfactual answers change the outcome (%d scoring rounds)",
             out_path, meta["critical"], len(answers), rounds)
    return meta
