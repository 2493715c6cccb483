"""`fsgen-replay`: an lm-eval model that answers each request with a decode run's stored response.

Scoring a decode run is `simple_evaluate(model=ReplayLM(samples), ...)` with the same tasks and
document selection: lm-eval rebuilds the requests, gets the raw responses (`resps`) back from
here, and re-applies its filters and metrics, so a changed filter or metric re-scores without a
model. Requests are matched by (task, doc position, request index), where the doc position is
the rank of the stored `doc_id` among that task's stored doc_ids (lm-eval numbers selected docs
0..n-1 in dataset order while logging the dataset index). Each match is checked: the prompt
must be the one the decode run answered, or replay stops naming the task and doc.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model


class ReplayMismatch(LookupError):
    pass


def read_samples(path) -> list[dict]:
    """samples.jsonl as written by fsgen.harness.run (one lm-eval sample per line, with `task`)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"replay: samples file {path} does not exist (run the decode step first)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def index_samples(samples: list[dict]) -> dict[tuple[str, int], dict]:
    """(task, doc position) -> sample; lm-eval logs each doc once per filter: the first is kept."""
    by_task: dict[str, dict[int, dict]] = defaultdict(dict)
    for sample in samples:
        if "task" not in sample:
            raise ValueError("replay: a sample has no 'task' key (write samples with fsgen.harness.run)")
        by_task[sample["task"]].setdefault(int(sample["doc_id"]), sample)
    index = {}
    for task, docs in by_task.items():
        for position, doc_id in enumerate(sorted(docs)):
            index[(task, position)] = docs[doc_id]
    return index


@register_model("fsgen-replay")
class ReplayLM(LM):
    """Returns stored responses; `samples` is a samples.jsonl path or the list of its records."""

    def __init__(self, samples=None, **kwargs) -> None:
        super().__init__()
        if samples is None:
            raise ValueError("fsgen-replay needs samples=<path to samples.jsonl>")
        records = samples if isinstance(samples, list) else read_samples(samples)
        self.index = index_samples(records)
        self.served: dict[tuple, int] = defaultdict(int)  # key -> copies served (repeats > 1)

    def _response(self, request):
        key = (request.task_name, int(request.doc_id))
        sample = self.index.get(key)
        if sample is None:
            raise ReplayMismatch(f"replay: no stored response for task {key[0]!r} doc #{key[1]} "
                                 f"(decode and score must select the same documents)")
        idx = int(request.idx)
        stored_args, stored_resps = sample["arguments"], sample["resps"]
        if idx >= len(stored_resps):
            raise ReplayMismatch(f"replay: task {key[0]!r} doc_id {sample['doc_id']} has no request #{idx}")
        if stored_args[idx][0] != request.args[0]:
            raise ReplayMismatch(
                f"replay: task {key[0]!r} doc_id {sample['doc_id']} request #{idx}: the prompt differs "
                f"from the decode run's (changed template, few-shot examples or seed?)"
            )
        copy = self.served[(*key, idx)]
        self.served[(*key, idx)] += 1
        responses = stored_resps[idx]
        if copy >= len(responses):
            raise ReplayMismatch(f"replay: task {key[0]!r} doc_id {sample['doc_id']} request #{idx}: "
                                 f"asked for {copy + 1} responses, {len(responses)} stored")
        return responses[copy]

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        return [self._response(r) for r in requests]

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return [(float(r[0]), bool(r[1])) for r in map(self._response, requests)]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        return [float(self._response(r)) for r in requests]
