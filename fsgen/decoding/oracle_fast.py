"""Oracle decoding with the `always` router, fast: the output is the large model's greedy output.

One batched `generate` of the large model, then one teacher-forced forward of the small model
over prompt + generation records what System 1 would have chosen at every position. Rows stop
inside `generate` at EOS and at the request's stop strings, so tokens after a stop are neither
computed (once every row of the batch is done) nor traced. The trace
equals the step loop's (tested): tokens exactly, probabilities to float rounding.
"""

from __future__ import annotations

import inspect

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList, StoppingCriteria, StoppingCriteriaList

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.distributions import summarize
from fsgen.decoding.models import model_device
from fsgen.decoding.stopping import StopCriteria


class SharedVocabOnly(LogitsProcessor):
    """Padded embedding rows past the shared tokenizer vocabulary are never chosen.

    It also records System 2's distribution per step (top-1 probability and entropy over the
    shared vocabulary), so `generate` need not keep [B, N, V] logits around.
    """

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.top1_prob: list[torch.Tensor] = []  # per step, [B]
        self.entropy: list[torch.Tensor] = []  # per step, [B]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        summary = summarize(torch.log_softmax(scores[:, : self.vocab_size].float(), dim=-1))
        self.top1_prob.append(summary.top1_prob)
        self.entropy.append(summary.entropy)
        scores[:, self.vocab_size :] = float("-inf")
        return scores


class RowStops(StoppingCriteria):
    """fsgen's `StopCriteria` per row inside `generate`: a row is done at the token that
    completes a stop string (or EOS, or the budget), exactly where the step loop stops it, so
    the batch stops paying for forwards once every row is done. A done row stays done (generate
    fills it with padding after that)."""

    def __init__(self, stop: StopCriteria, prompt_width: int, batch: int):
        self.stop = stop
        self.prompt_width = prompt_width
        self.done = [False] * batch

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        generated = input_ids[:, self.prompt_width :].tolist()  # [B, n] so far
        for row, ids in enumerate(generated):
            if not self.done[row]:
                self.done[row] = self.stop.finished_length(ids, checked=len(ids) - 1) is not None
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)


def left_pad(sequences: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """input_ids [B, T] left-padded with pad_id, attention_mask [B, T]."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


@torch.no_grad()
def full_logprobs(
    model, input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_size: int, keep_last: int = 0
) -> torch.Tensor:
    """[B, T, V] float32 log-probs of one full forward (no cache) over left-padded inputs.

    Positions count real tokens only (as CachedModel does), so padding does not shift them.
    keep_last > 0: only the last `keep_last` positions are projected to the vocabulary
    ([B, keep_last, V]), which spares a [B, T, V] tensor when only a suffix is read.
    """
    device = model_device(model)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    position_ids = (attention_mask.long().cumsum(dim=-1) - 1).clamp_min(0)
    takes_keep = "logits_to_keep" in inspect.signature(model.forward).parameters
    extra = {"logits_to_keep": keep_last} if keep_last and takes_keep else {}
    out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False, **extra)
    logits = out.logits[..., :vocab_size].float()
    if keep_last:
        logits = logits[:, -keep_last:]  # models without logits_to_keep return every position
    return torch.log_softmax(logits, dim=-1)


@torch.no_grad()
def greedy_generate(model, prompt_ids: list[list[int]], max_new_tokens: int, eos_ids, pad_id: int, vocab_size: int,
                    stop: StopCriteria | None = None):
    """Greedy `generate` over a left-padded batch on the shared vocabulary.

    The model's own generation_config (which may ask for sampling or a repetition penalty) is
    swapped for a clean greedy one during the call. With `stop` strings, rows stop at them
    inside `generate` (`RowStops`). Returns (new ids [B, N], (top1_prob [B, N],
    entropy [B, N])): System 2's distribution at each step over the shared vocabulary.
    """
    input_ids, attention_mask = left_pad(prompt_ids, pad_id)
    device = model_device(model)
    clean = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        eos_token_id=sorted(eos_ids) or None,
        pad_token_id=pad_id,
    )
    recorder = SharedVocabOnly(vocab_size)
    stopping = StoppingCriteriaList([RowStops(stop, input_ids.shape[1], len(prompt_ids))] if stop and stop.stop else [])
    saved = model.generation_config
    model.generation_config = clean
    try:
        out = model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=clean,
            logits_processor=LogitsProcessorList([recorder]),
            stopping_criteria=stopping,
        )
    finally:
        model.generation_config = saved
    new_ids = out[:, input_ids.shape[1] :]
    return new_ids, (torch.stack(recorder.top1_prob, dim=1), torch.stack(recorder.entropy, dim=1))


@torch.no_grad()
def oracle_fast_batch(
    systems, prompt_ids: list[list[int]], config: DecodeConfig, stop: StopCriteria
) -> list[tuple[list[int], list[dict]]]:
    """Oracle + always router for one batch. Same return value as `steploop.step_batch`."""
    filler = systems.tokenizer.pad_token_id or 0
    vocab = systems.vocab_size
    new_ids, (s2_top1, s2_entropy) = greedy_generate(
        systems.large, prompt_ids, config.max_new_tokens, stop.eos_token_ids, filler, vocab, stop
    )  # [B, N] each
    generations = []
    for row, ids in enumerate(new_ids.tolist()):
        keep = stop.finished_length(ids) or len(ids)
        generations.append(ids[:keep])
    # System 1 teacher-forced over prompt + generation (the last generated token is not read)
    sequences = [p + g[:-1] for p, g in zip(prompt_ids, generations)]
    input_ids, attention_mask = left_pad(sequences, filler)
    # generated tokens are each row's last positions: project only the longest generation's span
    width = max(len(g) for g in generations)
    small_logprobs = full_logprobs(systems.small, input_ids, attention_mask, vocab, keep_last=width)  # [B, width, V]
    results = []
    for row, (prompt, gen) in enumerate(zip(prompt_ids, generations)):
        n = len(gen)
        # the distribution for generated token j is read at the sequence's position len(prompt)+j-1
        s1_sum = summarize(small_logprobs[row, width - n :], config.top_k)  # over [n, V]
        s1_token = s1_sum.argmax.tolist()
        s1_top1, s1_top2, s1_entropy = s1_sum.top1_prob.tolist(), s1_sum.top2_prob.tolist(), s1_sum.entropy.tolist()
        s2_top1_row, s2_entropy_row = s2_top1[row, :n].tolist(), s2_entropy[row, :n].tolist()
        records = []
        for j, token in enumerate(gen):
            record = {
                "position": j,
                "token_id": token,
                "s1_token_id": s1_token[j],
                "s2_called": True,
                "intervened": token != s1_token[j],
                "s1_top1_prob": s1_top1[j],
                "s1_top2_prob": s1_top2[j],
                "s1_entropy": s1_entropy[j],
                "s2_top1_prob": s2_top1_row[j],
                "s2_entropy": s2_entropy_row[j],
            }
            if config.top_k:
                record["s1_topk_probs"] = s1_sum.topk_probs[j].tolist()
                record["s1_topk_ids"] = s1_sum.topk_ids[j].tolist()
            records.append(record)
        results.append((gen, records))
    return results

