"""`fsgen`: lm-eval model that decodes with a fast/slow method and scores with its distribution.

model_args (lm-eval `key=value,...` or a dict):
    large, small, small_tuned    model folders / hub ids (the method says which are needed)
    method, router, alpha, beta, formula, k, temperature, seed, top_k
                                 fsgen.config.DecodeConfig fields
    batch_size                   prompts decoded (or sequences scored) together
    max_new_tokens               used when a request has no max_gen_toks (lm-eval's default: 256)
    max_length                   longest sequence scored by loglikelihood (default: the models')
    dtype, device                e.g. float32/bfloat16, cpu/cuda
    trace, generations           optional paths: written (atomically) after generate_until
    resume_dir                   optional fsgen.resume cache folder: finished requests survive a
                                 killed job and are not decoded again

Requests and the trace: `generate_until` gives each request its index in the list lm-eval
passes (one call per run, all tasks) as the engine's `request_id`; `self.records` keep
(request_id, task, doc position, request idx) so the trace joins to lm-eval's samples
(fsgen.harness.run maps doc positions to dataset doc_ids and writes generations.jsonl).
"""

from __future__ import annotations

import json
import logging
from dataclasses import fields, replace

import pandas as pd
import torch
from lm_eval.api.model import LM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from fsgen.config import DecodeConfig

log = logging.getLogger(__name__)

DECODE_FIELDS = {f.name for f in fields(DecodeConfig)} - {"stop", "max_new_tokens", "progress"}
KNOWN_GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature"}


# ---------------------------------------------------------------- scoring (pure functions)


def encode(tokenizer, text: str) -> list[int]:
    """Token ids as decode() sees a prompt: the tokenizer's default special tokens."""
    return list(tokenizer(text).input_ids)


def encode_pair(tokenizer, context: str, continuation: str, prefix_id: int) -> tuple[list[int], list[int]]:
    """lm-eval's split of context/continuation tokens (trailing spaces move to the continuation).

    The continuation's tokens are those of (context + continuation) past the context's, so the
    pair scores exactly what the model would see; an empty context becomes [prefix_id].
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    context_ids = encode(tokenizer, context)
    if not context_ids:
        return [prefix_id], list(tokenizer(continuation, add_special_tokens=False).input_ids)
    whole = encode(tokenizer, context + continuation)
    return context_ids, whole[len(context_ids):]


def score_token_pairs(
    logprobs_fn, pairs: list[tuple[list[int], list[int]]], batch_size: int, max_length: int, device, pad_id: int = 0
) -> list[tuple[float, bool]]:
    """(sum of log p(continuation | context), continuation is the greedy choice) for each pair.

    `logprobs_fn(input_ids [B, T], attention_mask [B, T]) -> [B, T, V]` next-token log-probs.
    Rows are right-padded (a causal model's real positions do not see the padding); sequences
    longer than max_length + 1 keep their last max_length + 1 tokens.
    """
    out: list[tuple[float, bool] | None] = [None] * len(pairs)
    # longest first: batches of similar lengths, and an out-of-memory shows up at once
    order = sorted(range(len(pairs)), key=lambda i: -(len(pairs[i][0]) + len(pairs[i][1])))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        seqs, n_scored = [], []
        for i in rows:
            context, continuation = pairs[i]
            if not continuation:
                raise ValueError(f"request #{i}: empty continuation (nothing to score)")
            full = (context + continuation)[-(max_length + 1):]
            seqs.append(full)
            n_scored.append(min(len(continuation), len(full) - 1))
        width = max(len(s) - 1 for s in seqs)
        input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)  # [B, T]
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)  # [B, T]
        for b, s in enumerate(seqs):
            input_ids[b, : len(s) - 1] = torch.tensor(s[:-1])
            attention_mask[b, : len(s) - 1] = 1
        with torch.no_grad():
            logprobs = logprobs_fn(input_ids.to(device), attention_mask.to(device)).float().cpu()  # [B, T, V]
        for b, i in enumerate(rows):
            s, n = seqs[b], n_scored[b]
            positions = torch.arange(len(s) - 1 - n, len(s) - 1)  # predict s[p + 1]
            targets = torch.tensor(s[len(s) - n:])  # [n]
            row = logprobs[b, positions]  # [n, V]
            total = row.gather(-1, targets[:, None]).sum().item()
            greedy = bool((row.argmax(-1) == targets).all())
            out[i] = (float(total), greedy)
    return out


def rolling_pairs(token_ids: list[int], prefix_id: int, max_length: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows covering every token of a document."""
    windows = get_rolling_token_windows(token_ids, prefix_token=prefix_id, max_seq_len=max_length, context_len=1)
    return [make_disjoint_window(w) for w in windows]


def generation_options(gen_kwargs: dict, default_max_new_tokens: int, task: str) -> tuple[tuple[str, ...], int]:
    """(stop strings, max_new_tokens) of one request; sampling is refused (fsgen decodes greedily)."""
    until = gen_kwargs.get("until") or ()
    until = (until,) if isinstance(until, str) else tuple(until)
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0.0) > 0:
        raise ValueError(f"task {task!r} asks for sampling ({gen_kwargs}); fsgen decodes greedily "
                         f"(set do_sample: false / temperature: 0 in the task or gen_kwargs)")
    max_new = int(gen_kwargs.get("max_gen_toks") or default_max_new_tokens)
    return until, max_new


# ---------------------------------------------------------------- the lm-eval model


@register_model("fsgen")
class FsgenLM(LM):
    def __init__(
        self,
        large: str | None = None,
        small: str | None = None,
        small_tuned: str | None = None,
        method: str = "oracle",
        batch_size: int | str | None = 8,
        max_new_tokens: int = 256,
        max_length: int | None = None,
        dtype: str = "float32",
        device: str | None = "cpu",
        trace: str | None = None,
        generations: str | None = None,
        resume_dir: str | None = None,
        systems=None,  # a ready fsgen.engine.Systems (tests, notebooks); skips loading
        **decode_args,
    ) -> None:
        super().__init__()
        from fsgen import engine

        unknown = set(decode_args) - DECODE_FIELDS - {"max_batch_size", "trust_remote_code"}
        if unknown:
            raise ValueError(f"fsgen model: unknown model_args {sorted(unknown)}")
        decode_args.pop("max_batch_size", None)
        trust_remote_code = bool(decode_args.pop("trust_remote_code", False))
        batch_size = 8 if batch_size in (None, "auto") else int(batch_size)
        self.config = DecodeConfig(method=method, batch_size=batch_size, max_new_tokens=int(max_new_tokens),
                                   **decode_args)
        self.systems = systems if systems is not None else engine.load_systems(
            small=small, large=large, small_tuned=small_tuned, method=method, dtype=dtype,
            device=device or "cpu", trust_remote_code=trust_remote_code)
        self.tokenizer = self.systems.tokenizer
        models = [m for m in (self.systems.small, self.systems.large, self.systems.small_tuned) if m is not None]
        self._device = next(models[0].parameters()).device  # LM.device reads it
        context = min(getattr(m.config, "max_position_embeddings", 2048) for m in models)
        self.max_length = min(int(max_length), context) if max_length else context
        self.prefix_id = self.tokenizer.bos_token_id if self.tokenizer.bos_token_id is not None else self.tokenizer.eos_token_id
        self.trace_path, self.generations_path = trace, generations
        self.resume_dir = resume_dir
        self.records: list[dict] = []  # one per generate_until request, see module doc
        self.trace_frames: list[pd.DataFrame] = []
        self.decode_metadata: dict = {}

    # lm-eval asks for these
    def get_model_info(self) -> dict:
        return {"fsgen": {"models": dict(self.systems.names), "decode_config": self.config.to_dict()}}

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "fsgen")).replace("/", "__")

    # ------------------------------------------------------------ generation

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        texts: list[str | None] = [None] * len(requests)
        groups: dict[tuple, list[int]] = {}
        for i, request in enumerate(requests):
            gen_kwargs = dict(request.args[1] or {})
            extra = set(gen_kwargs) - KNOWN_GEN_KWARGS
            if extra:
                log.warning("fsgen ignores generation options %s of task %s", sorted(extra), request.task_name)
            groups.setdefault(generation_options(gen_kwargs, self.config.max_new_tokens, request.task_name), []).append(i)
        base_offset = len(self.records)  # request ids stay unique over several calls
        new_records: list[dict | None] = [None] * len(requests)
        for (until, max_new), indices in groups.items():
            config = replace(self.config, stop=until, max_new_tokens=max_new,
                             progress=None if not disable_tqdm else False)
            result = self._decode([requests[i].args[0] for i in indices], config,
                                  [base_offset + i for i in indices], sorted({requests[i].task_name for i in indices}))
            self.trace_frames.append(result.trace)
            self.decode_metadata = result.metadata
            for i, generation in zip(indices, result.generations, strict=True):
                texts[i] = generation["text"]
                new_records[i] = {
                    "request_id": base_offset + i,
                    "task": requests[i].task_name,
                    "doc_position": int(requests[i].doc_id),
                    "idx": int(requests[i].idx),
                    "stop": list(until),
                    "max_new_tokens": max_new,
                    "prompt": generation["prompt"],
                    "text": generation["text"],
                    "token_ids": [int(t) for t in generation["token_ids"]],
                }
        self.records.extend(new_records)
        if self.trace_path:
            self.write_trace(self.trace_path)
        if self.generations_path:
            self.write_generations(self.generations_path)
        return texts

    def _decode(self, prompts, config, request_ids, tasks):
        from fsgen import engine

        if not self.resume_dir:
            return engine.decode(self.systems, prompts, config, request_ids=request_ids)
        from fsgen.resume import ResumeCache, decode_job_key, decode_resumable

        base = replace(self.config, stop=(), max_new_tokens=1)  # per-request options are in the request key
        with ResumeCache(self.resume_dir, decode_job_key(self.systems, base, tasks=tasks)) as cache:
            return decode_resumable(self.systems, prompts, config, cache, request_ids=request_ids)

    def trace(self) -> pd.DataFrame:
        from fsgen.trace import empty_trace

        frames = [f for f in self.trace_frames if len(f)]
        if not frames:
            return empty_trace(self.config.top_k > 0)
        return pd.concat(frames, ignore_index=True).sort_values(["request_id", "position"], ignore_index=True)

    def metadata(self) -> dict:
        meta = dict(self.decode_metadata) or {"method": self.config.method, "models": dict(self.systems.names),
                                             "params": self.config.to_dict()}
        meta["request_id"] = "index of the request in lm-eval's generate_until list (see generations.jsonl)"
        return meta

    def write_trace(self, path, extra_metadata: dict | None = None) -> None:
        from fsgen.resume import check_trace_matches
        from fsgen.trace import write_trace

        trace = self.trace()
        check_trace_matches(self.records, trace)  # a trace that disagrees with the generations fails here
        write_trace(trace, path, {**self.metadata(), **(extra_metadata or {})})

    def write_generations(self, path, doc_ids=None) -> None:
        """generations.jsonl; `doc_ids(task, doc_position) -> dataset doc_id` (default: the position)."""
        from fsgen.atomic import atomic_path

        with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
            for record in self.records:
                row = dict(record)
                row["doc_id"] = doc_ids(row["task"], row["doc_position"]) if doc_ids else row["doc_position"]
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    # ------------------------------------------------------------ scoring

    def _logprobs(self, input_ids, attention_mask):
        from fsgen import engine

        return engine.method_logprobs(self.systems, self.config, input_ids, attention_mask)

    def _score(self, pairs):
        return score_token_pairs(self._logprobs, pairs, self.config.batch_size, self.max_length, self.device,
                                 pad_id=self.tokenizer.pad_token_id or 0)

    def loglikelihood(self, requests, disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        pairs = [encode_pair(self.tokenizer, r.args[0], r.args[1], self.prefix_id) for r in requests]
        return self._score(pairs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, request in enumerate(requests):
            tokens = list(self.tokenizer(request.args[0], add_special_tokens=False).input_ids)
            for window in rolling_pairs(tokens, self.prefix_id, self.max_length):
                windows.append(window)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self._score(windows), strict=True):
            totals[i] += logprob
        return totals
