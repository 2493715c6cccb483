"""`fsgen`: lm-eval model that decodes with a fast/slow method and scores with its distribution.

model_args (lm-eval `key=value,...` or a dict):
    large, small, small_tuned, model
                                 model folders / hub ids: the roles the method needs
                                 (fsgen.decoding.methods registry)
    method, router, alpha, beta, formula, k, temperature, seed, top_k, batch_size, max_new_tokens
                                 fsgen.decoding.DecodeConfig fields (unset: its defaults);
                                 max_new_tokens is used when a request has no max_gen_toks
    max_length                   longest sequence scored by loglikelihood (default: the models')
    dtype, device                e.g. float32/bfloat16, cpu/cuda (cuda without CUDA: the CPU, with a warning)
    trace, generations           optional paths: written (atomically) after generate_until
    resume_dir                   optional fsgen.resume cache folder: finished requests survive a
                                 killed job and are not decoded again (keyed by
                                 fsgen.decoding.resumable.decode_job_parts)
    job                          optional identity of the workflow job (benchmark, variant, large,
                                 small | model), part of the resume key and recorded in key.json
or, from Python: `systems` (a loaded fsgen.decoding.Systems) and `config` (a DecodeConfig).

Built on lm-eval's TemplateLM, which splits context and continuation and handles empty contexts;
this class supplies tokenisation, `_loglikelihood_tokens`, `loglikelihood_rolling` and
`generate_until`, and lm-eval's chat-template hooks (`apply_chat_template`, `tokenizer_name`;
`chat_template` is TemplateLM's): `simple_evaluate(apply_chat_template=True)` renders prompts
with the shared tokenizer's chat template, as lm-eval's HF model does.

Requests and the trace: `generate_until` gives each request its index in the list lm-eval
passes (one call per run, all tasks) as the engine's `request_id`; `self.records` keep
(request_id, task, doc position, request idx) so the trace joins to lm-eval's samples
(fsgen.harness.run maps doc positions to dataset doc_ids and writes generations.jsonl).
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace

import pandas as pd
import torch
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.methods import METHODS

log = logging.getLogger(__name__)

KNOWN_GEN_KWARGS = {"until", "max_gen_toks", "do_sample", "temperature"}


# ---------------------------------------------------------------- scoring (pure functions)


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


def available_device(device: str | None) -> str:
    """The device to load on: `device` (default cpu), or the CPU with a warning when it asks for
    CUDA that is not there (lm-eval's CLI passes cuda:0 by default), as lm-eval's HF model does."""
    device = device or "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("fsgen model: device %r asked for but CUDA is not available; using the CPU", device)
        return "cpu"
    return device


class ChatTemplateMissing(ValueError):
    """Chat prompts were asked for, but the model's tokenizer has no chat template."""


def render_chat(tokenizer, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
    """A conversation rendered with the tokenizer's chat template, as lm-eval's HF model does
    (`continue_final_message` when no generation prompt is added; a template that refuses a
    system message gets the conversation without it, with a warning)."""
    import jinja2

    def render(history):
        return tokenizer.apply_chat_template(history, tokenize=False, add_generation_prompt=add_generation_prompt,
                                             continue_final_message=not add_generation_prompt)

    try:
        return render(chat_history)
    except jinja2.exceptions.TemplateError:
        log.warning("the chat template refused the conversation; rendering it without the system message")
        return render([m for m in chat_history if m["role"] != "system"])


def chat_template_record(tokenizer, model: str) -> dict:
    """What a run records of the chat template it applied: enough to render it again without
    the model (scoring replays the prompts) and to see which one it was."""
    import hashlib

    template = tokenizer.chat_template
    return {"applied": True, "model": model, "sha256": hashlib.sha256(template.encode()).hexdigest(),
            "template": template, "special_tokens": dict(tokenizer.special_tokens_map)}


# ---------------------------------------------------------------- the lm-eval model


@register_model("fsgen")
class FsgenLM(TemplateLM):
    def __init__(
        self,
        method: str = "oracle",
        batch_size: int | str | None = None,
        max_length: int | None = None,
        dtype: str = "float32",
        device: str | None = "cpu",
        trace: str | None = None,
        generations: str | None = None,
        resume_dir: str | None = None,
        job: dict | None = None,
        systems=None,  # a ready fsgen.decoding.Systems (tests, notebooks, the pipeline); skips loading
        config: DecodeConfig | None = None,  # a ready DecodeConfig; then no decode settings as kwargs
        trust_remote_code: bool = False,
        max_batch_size=None,  # lm-eval passes it; fsgen decodes in fixed batches
        **settings,
    ) -> None:
        super().__init__()
        from fsgen.decoding import engine

        roles = {role for m in METHODS.values() for role in m.roles}
        models = {role: settings.pop(role) for role in sorted(roles) if role in settings}
        if config is None:
            batch_size = None if batch_size in (None, "auto") else int(batch_size)
            config = DecodeConfig.from_settings(settings, method=method, batch_size=batch_size)
        elif settings:
            raise ValueError(f"fsgen model: decode settings {sorted(settings)} given beside a DecodeConfig")
        self.config = config
        self.systems = systems if systems is not None else engine.load_systems(
            config.method, dtype=dtype, device=available_device(device), trust_remote_code=bool(trust_remote_code),
            **models)
        self.tokenizer = self.systems.tokenizer
        models = list(self.systems.models.values())
        self._device = next(models[0].parameters()).device  # LM.device reads it
        context = min(getattr(m.config, "max_position_embeddings", 2048) for m in models)
        self.max_length = min(int(max_length), context) if max_length else context
        self.trace_path, self.generations_path = trace, generations
        self.resume_dir, self.job = resume_dir, job
        self.records: list[dict] = []  # one per generate_until request, see module doc
        self.trace_frames: list[pd.DataFrame] = []
        self.decode_metadata: dict = {}

    # lm-eval asks for these
    def get_model_info(self) -> dict:
        return {"fsgen": {"models": dict(self.systems.names), "decode_config": self.config.to_dict()}}

    @property
    def tokenizer_name(self) -> str:
        return str(getattr(self.tokenizer, "name_or_path", "fsgen")).replace("/", "__")

    # ------------------------------------------------------------ chat prompts

    def check_chat_template(self, benchmark: str | None = None) -> None:
        """ChatTemplateMissing naming the model when its tokenizer has no chat template."""
        if not getattr(self.tokenizer, "chat_template", None):
            what = f"benchmark {benchmark!r} asks for chat prompts (chat_template)" if benchmark else "chat prompts"
            raise ChatTemplateMissing(f"{what}, but the tokenizer of model {self.systems.tokenizer_model!r} has "
                                      f"no chat template; set chat_template: false or use a chat model")

    def apply_chat_template(self, chat_history: list[dict], add_generation_prompt: bool = True) -> str:
        """lm-eval's hook under `apply_chat_template=True`: the conversation as one prompt string."""
        self.check_chat_template()
        return render_chat(self.tokenizer, chat_history, add_generation_prompt)

    def chat_template_record(self, benchmark: str | None = None) -> dict:
        """What decode_results.json and the trace record of the applied chat template."""
        self.check_chat_template(benchmark)
        return chat_template_record(self.tokenizer, self.systems.tokenizer_model)

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
        from fsgen.decoding import engine

        if not self.resume_dir:
            return engine.decode(self.systems, prompts, config, request_ids=request_ids)
        from fsgen.decoding.resumable import decode_resumable, open_job_cache

        # stop strings and token budget vary per request: they are in the request key
        with open_job_cache(self.resume_dir, self.systems, config, tasks=tasks, job=self.job) as cache:
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
        from fsgen.trace import check_trace_matches, write_trace

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

    # ------------------------------------------------------------ scoring (TemplateLM's hooks)

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        """What an empty context is scored from: BOS when the tokenizer has one, else EOS."""
        bos = self.tokenizer.bos_token_id
        return bos if bos is not None else self.tokenizer.eos_token_id

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """Token ids as decode() sees a prompt (`engine.encode_prompt`: the tokenizer's default
        special tokens, no second BOS after a chat template's own)."""
        from fsgen.decoding.engine import encode_prompt

        if add_special_tokens is None:
            return encode_prompt(self.tokenizer, string)
        return list(self.tokenizer(string, add_special_tokens=add_special_tokens).input_ids)

    def _logprobs(self, input_ids, attention_mask):
        from fsgen.decoding import engine

        return engine.method_logprobs(self.systems, self.config, input_ids, attention_mask)

    def _score(self, pairs):
        return score_token_pairs(self._logprobs, pairs, self.config.batch_size, self.max_length, self.device,
                                 pad_id=self.tokenizer.pad_token_id or 0)

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs) -> list[tuple[float, bool]]:
        # a context that tokenizes to nothing (only spaces, moved to the continuation) is scored
        # from the prefix token, as an empty one is
        return self._score([(context or [self.prefix_token_id], continuation)
                            for _, context, continuation in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        windows, owner = [], []
        for i, request in enumerate(requests):
            tokens = self.tok_encode(request.args[0], add_special_tokens=False)
            for window in rolling_pairs(tokens, self.prefix_token_id, self.max_length):
                windows.append(window)
                owner.append(i)
        totals = [0.0] * len(requests)
        for i, (logprob, _) in zip(owner, self._score(windows), strict=True):
            totals[i] += logprob
        return totals
