"""A decode job read for display: per request, its tokens as System 1 and System 2 decided them.

A job folder holds trace.parquet (one row per generated token), generations.jsonl (request_id ->
prompt, task, doc_id, text), and after scoring scored_samples.jsonl (lm-eval's per-doc metrics).
`load_job` joins them; nothing here renders.

Token kinds (from the trace's own columns, so the page shows what the statistics count):
    intervened  the final token differs from System 1's argmax (`intervened`)
    agreed      System 2 was consulted (`s2_called`) and the final token is System 1's argmax
    alone       System 2 was not consulted
Speculative rounds (`round` not null): a `drafted` row is an accepted draft; the round's one
undrafted row is System 2's own token, a correction when the round accepted fewer drafts than k
(greedy: System 1's rejected draft is that row's `s1_token_id`, its argmax there) or a bonus
token after a fully accepted round. A round shortened by the token budget can make a bonus look
like a correction; with temperature > 0 the sampled draft is not recorded, only the argmax.
"""

from __future__ import annotations

import json
import math
import random
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from fsgen.trace import read_trace

KINDS = ("intervened", "agreed", "alone")


@dataclass(frozen=True)
class Token:
    position: int
    token_id: int
    text: str  # this token's share of the decoded text
    kind: str  # one of KINDS
    s1_token_id: int
    s1_text: str  # System 1's own choice, decoded on its own
    s1_prob: float  # System 1's top-1 probability (of s1_token_id)
    s2_prob: float | None  # System 2's top-1 probability; None when not consulted
    round: int | None = None  # speculative round
    role: str | None = None  # speculative: "draft", "correction" or "bonus"
    after_stop: bool = False  # generated past the end of the returned text (a stop string)


@dataclass(frozen=True)
class Verdict:
    metric: str  # lm-eval "metric,filter"
    value: float
    target: str
    answer: str  # lm-eval's filtered response

    @property
    def correct(self) -> bool | None:
        """True / False for a 1 / 0 metric (exact match, accuracy, pass@1); None for a graded score."""
        return True if self.value == 1 else False if self.value == 0 else None

    @property
    def label(self) -> str:
        return {True: "correct", False: "wrong", None: "graded"}[self.correct]


@dataclass
class Request:
    request_id: int
    tokens: list[Token]
    prompt: str | None = None
    task: str | None = None
    doc_id: int | None = None
    verdict: Verdict | None = None

    def where(self) -> list[str]:
        """["request 3", "task gsm8k", "doc 17"]: what identifies it, as far as known."""
        parts = [f"request {self.request_id}"]
        if self.task is not None:
            parts.append(f"task {self.task}")
        if self.doc_id is not None:
            parts.append(f"doc {self.doc_id}")
        return parts

    def summary(self) -> str:
        """"15 tokens; System 2 consulted at 15, changed 2"."""
        changed = sum(t.kind == "intervened" for t in self.tokens)
        consulted = sum(t.kind != "alone" for t in self.tokens)
        return f"{len(self.tokens)} tokens; System 2 consulted at {consulted}, changed {changed}"


@dataclass
class Job:
    path: Path  # the trace file
    metadata: dict
    trace: pd.DataFrame
    generations: dict[int, dict]  # request_id -> generations.jsonl row
    verdicts: dict[int, Verdict]  # request_id -> verdict
    tokenizer_name: str | None  # where the token texts came from; None: shown as ids
    tokenizer: object = field(default=None, repr=False)

    @property
    def request_ids(self) -> list[int]:
        return sorted(int(r) for r in self.trace["request_id"].unique())

    def request(self, request_id: int) -> Request:
        rows = self.trace[self.trace["request_id"] == request_id].sort_values("position")
        if rows.empty:
            raise KeyError(f"{self.path}: no request_id {request_id} in the trace "
                           f"(it has {len(self.request_ids)} requests, ids {self.request_ids[:5]}...)")
        generation = self.generations.get(request_id, {})
        tokens = token_views(rows, self.tokenizer, int(self.metadata.get("k") or 0), generation.get("text"))
        return Request(request_id, tokens, generation.get("prompt"), generation.get("task"),
                       generation.get("doc_id"), self.verdicts.get(request_id))


# ---------------------------------------------------------------- reading a job


def job_files(path: str | Path) -> tuple[Path, Path]:
    """(trace file, job folder) from a trace path or a job folder."""
    path = Path(path)
    trace = path / "trace.parquet" if path.is_dir() else path
    if not trace.is_file():
        raise FileNotFoundError(f"no trace at {trace}")
    return trace, trace.parent


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def load_job(path: str | Path, tokenizer: str | None = None, generations: str | Path | None = None,
             metric: str | None = None) -> Job:
    """Read a job (a trace file or its folder); its tokenizer from `tokenizer` or the trace's models."""
    trace_path, folder = job_files(path)
    trace, metadata = read_trace(trace_path)
    gen_path = Path(generations) if generations else folder / "generations.jsonl"
    rows = read_jsonl(gen_path) if gen_path.is_file() else []
    by_request = {int(r["request_id"]): r for r in rows}
    scored = folder / "scored_samples.jsonl"
    verdicts = request_verdicts(rows, read_jsonl(scored), metric) if scored.is_file() and rows else {}
    tok, name = find_tokenizer(metadata, trace_path, tokenizer)
    return Job(trace_path, metadata, trace, by_request, verdicts, name, tok)


def tokenizer_candidates(metadata: dict, trace_path: Path) -> list[str]:
    """Where the trace's models may be: as named, or relative to a folder above the trace (the
    workflow names `results/models/<name>` from its working directory)."""
    names = list(metadata.get("models", {}).values())  # every role's model shares the tokenizer
    out = []
    for name in filter(None, names):
        if Path(name).is_absolute() or Path(name).exists():
            out.append(str(name))
            continue
        found = [p / name for p in Path(trace_path).resolve().parents if (p / name).is_dir()]
        out.append(str(found[0]) if found else str(name))
    return list(dict.fromkeys(out))


def find_tokenizer(metadata: dict, trace_path: Path, explicit: str | None = None):
    """(tokenizer, where from), or (None, None) when none loads: tokens are then shown as ids.

    A local folder is read with fsgen.decoding.models.load_tokenizer (as decoding did); a hub id only from
    the local Hugging Face cache, never downloaded.
    """
    from fsgen.decoding.models import load_tokenizer

    candidates = [explicit] if explicit else tokenizer_candidates(metadata, trace_path)
    for name in candidates:
        try:
            if Path(name).is_dir():
                return load_tokenizer(name), name
            from transformers import AutoTokenizer

            return AutoTokenizer.from_pretrained(name, local_files_only=True), name
        except (OSError, ValueError):
            continue
    if explicit:
        raise FileNotFoundError(f"tokenizer not found: {explicit}")
    return None, None


# ---------------------------------------------------------------- verdicts


def choose_metric(samples: list[dict], preferred: str | None = None) -> str | None:
    """The "metric,filter" a verdict reads: `preferred`, else the analysis's preference order,
    else the first accuracy-like metric (fsgen.analysis.stats), else None."""
    from fsgen.analysis.stats import ACCURACY_METRICS, DEFAULT_METRIC_PREFERENCE  # sklearn: only when needed

    present = sorted({f"{m},{s.get('filter', 'none')}" for s in samples for m in s.get("metrics", [])})
    if preferred:
        if preferred not in present:
            raise KeyError(f"metric {preferred!r} not in the scored samples (they have {present})")
        return preferred
    for key in DEFAULT_METRIC_PREFERENCE:
        if key in present:
            return key
    return next((k for k in present if k.split(",")[0] in ACCURACY_METRICS), None)


def request_verdicts(generations: list[dict], samples: list[dict], metric: str | None = None) -> dict[int, Verdict]:
    """request_id -> Verdict, joining generations (task, doc_id) to lm-eval's scored samples."""
    key = choose_metric(samples, metric)
    if key is None:
        return {}
    name, filter_name = key.split(",", 1)
    by_doc = {(s.get("task"), int(s["doc_id"])): s for s in samples
              if s.get("filter", "none") == filter_name and name in s}
    out = {}
    for g in generations:
        sample = by_doc.get((g.get("task"), g.get("doc_id")))
        value = sample.get(name) if sample else None
        if isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value):
            responses = sample.get("filtered_resps") or [""]
            out[int(g["request_id"])] = Verdict(key, float(value), str(sample.get("target", "")), str(responses[0]))
    return out


# ---------------------------------------------------------------- tokens


def printable(text: str) -> str:
    """Control characters (a model can write ESC) as \\xNN; newlines and tabs kept."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) != "Cc" else f"\\x{ord(c):02x}" for c in text)


def token_texts(tokenizer, ids: list[int]) -> list[str]:
    """Each token's share of the decoded text: decode(ids[:i+1]) minus decode(ids[:i]), so a
    character split over several byte-level tokens appears once, in the token completing it."""
    if tokenizer is None:
        return [f"⟨{i}⟩" for i in ids]

    def decode(part):
        return tokenizer.decode(part, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    texts, previous = [], ""
    for i in range(len(ids)):
        current = decode(ids[: i + 1])
        texts.append(current[len(previous):] if current.startswith(previous) else decode(ids[i:i + 1]))
        previous = current
    return texts


def single_texts(tokenizer, ids: list[int]) -> list[str]:
    """Tokens decoded each on its own (System 1's alternatives have no context)."""
    if tokenizer is None:
        return [f"⟨{i}⟩" for i in ids]
    return [tokenizer.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False) for i in ids]


def text_end(tokenizer, ids: list[int], text: str | None) -> int:
    """How many tokens the returned text covers: tokens from this index on were generated after
    it was complete (an EOS, the rest of a stop string). The engine's text is
    decode(skip_special_tokens=True) cut before the first stop string (fsgen.decoding.stopping)."""
    if tokenizer is None or text is None:
        return len(ids)
    for i in range(len(ids) + 1):
        if len(tokenizer.decode(ids[:i], skip_special_tokens=True)) >= len(text):
            return i
    return len(ids)


def token_kind(row) -> str:
    if bool(row.intervened):
        return "intervened"
    return "agreed" if bool(row.s2_called) else "alone"


def speculative_roles(rows: pd.DataFrame, k: int) -> list[str | None]:
    """Per row: "draft", "correction", "bonus" or None (not speculative); see the module doc."""
    rounds = rows["round"].tolist()
    drafted = rows["drafted"].astype(bool).tolist()
    intervened = rows["intervened"].astype(bool).tolist()
    accepted: dict[int, int] = {}
    for r, d in zip(rounds, drafted):
        if not pd.isna(r) and d:
            accepted[int(r)] = accepted.get(int(r), 0) + 1
    roles = []
    for r, d, changed in zip(rounds, drafted, intervened):
        if pd.isna(r):
            roles.append(None)
        elif d:
            roles.append("draft")
        else:  # greedy: a correction always differs from the draft, so an agreeing row is a bonus
            roles.append("correction" if changed and accepted.get(int(r), 0) < k else "bonus")
    return roles


def token_views(rows: pd.DataFrame, tokenizer, k: int, text: str | None = None) -> list[Token]:
    """The Token of each trace row of one request (rows sorted by position)."""
    ids = [int(t) for t in rows["token_id"]]
    texts = token_texts(tokenizer, ids)
    s1_texts = single_texts(tokenizer, [int(t) for t in rows["s1_token_id"]])
    roles = speculative_roles(rows, k)
    end = text_end(tokenizer, ids, text)
    tokens = []
    for i, (row, piece, s1_text, role) in enumerate(zip(rows.itertuples(index=False), texts, s1_texts, roles)):
        s2 = row.s2_top1_prob
        tokens.append(Token(
            position=int(row.position), token_id=int(row.token_id), text=piece, kind=token_kind(row),
            s1_token_id=int(row.s1_token_id), s1_text=s1_text, s1_prob=float(row.s1_top1_prob),
            s2_prob=None if pd.isna(s2) else float(s2), round=None if pd.isna(row.round) else int(row.round),
            role=role, after_stop=i >= end,
        ))
    return tokens


# ---------------------------------------------------------------- summaries


def sample_requests(request_ids: list[int], n: int, seed: int) -> list[int]:
    """`n` request ids drawn with `seed` (all when fewer), in increasing order."""
    ids = sorted(request_ids)
    return sorted(random.Random(seed).sample(ids, min(n, len(ids))))


def job_summary(trace: pd.DataFrame) -> str:
    """"150 requests, 1250 tokens; System 2 consulted at 1250, changed 143 (11.4%)": the whole trace,
    counted from its columns (the pooled share is what the statistics call the frequency)."""
    tokens, changed = len(trace), int(trace["intervened"].sum())
    share = f" ({changed / tokens:.1%})" if tokens else ""
    return (f"{trace['request_id'].nunique()} requests, {tokens} tokens; System 2 consulted at "
            f"{int(trace['s2_called'].sum())}, changed {changed}{share}")


def job_title(metadata: dict) -> str:
    """"oracle (router entropy:0.5): System 2 arith-l, System 1 arith-s" from the trace metadata."""
    models = metadata.get("models", {})
    method = metadata.get("method", "?")
    router = metadata.get("router")
    parts = [f"model {Path(models['model']).name}" if models.get("model") else None,
             f"System 2 {Path(models['large']).name}" if models.get("large") else None,
             f"System 1 {Path(models['small']).name}" if models.get("small") else None,
             f"tuned {Path(models['small_tuned']).name}" if models.get("small_tuned") else None]
    head = f"{method} (router {router})" if router and router != "always" else method
    return f"{head}: " + ", ".join(p for p in parts if p)
