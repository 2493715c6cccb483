"""Speculative decoding on batched KV caches (Leviathan et al. 2023; Chen et al. 2023).

Each round, System 1 drafts k tokens (k forwards of the small model, the first a block of the
tokens it has not seen yet) and System 2 scores [its unseen tokens + the k drafts] in one
forward. Greedy: the longest prefix of drafts equal to System 2's argmax is accepted, plus
System 2's own next token (a correction, or a bonus token after a fully accepted round). With
temperature > 0 each draft d is accepted with probability min(1, p(d)/q(d)) and a rejection is
replaced by a sample of norm(max(0, p − q)), so the output follows System 2's distribution
exactly. Rejected drafts are rolled back in both caches (`CachedModel.discard_last`), nothing
is recomputed.

Rows are independent of the batch: each row has its own generator (seed + request_id), draws a
fixed number of uniforms per round (2K + 1) whether or not it uses them, and samples by inverse
CDF, so neither the round's draft length (capped by the longest remaining budget in the batch)
nor its neighbours change what it draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd
import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.distributions import summarize
from fsgen.decoding.kvcache import CachedModel, right_align
from fsgen.decoding.stopping import StopCriteria
from fsgen.trace import records_to_frame


# ---------------------------------------------------------------------------------------------
# pure functions over tensors


def sample_inverse_cdf(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """One sample per row from unnormalised `probs` [B, V] with `uniforms` [B] in [0, 1).

    The smallest index whose cumulative mass exceeds u·total: tokens of zero mass are never
    chosen, and the result depends only on this row's numbers.
    """
    cdf = probs.cumsum(dim=-1)  # [B, V]
    target = (uniforms * cdf[:, -1]).unsqueeze(-1)  # [B, 1]
    index = torch.searchsorted(cdf, target, right=True).squeeze(-1)  # [B]
    return index.clamp_max(probs.shape[-1] - 1)


def greedy_accept(drafts: torch.Tensor, target_logprobs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy verification.

    drafts:          [B, k] long, System 1's drafts
    target_logprobs: [B, k+1, V] System 2's log-probs at the k draft positions and the one after
    returns accepted [B] long (0..k) and next_token [B] long: System 2's argmax after the
            accepted prefix (the correction, or the bonus token when all k were accepted).
    """
    target = target_logprobs.argmax(dim=-1)  # [B, k+1]
    agree = (drafts == target[:, :-1]).long()  # [B, k]
    accepted = agree.cumprod(dim=1).sum(dim=1)  # [B]
    next_token = target.gather(1, accepted[:, None]).squeeze(1)
    return accepted, next_token


def rejection_accept(
    drafts: torch.Tensor,
    draft_probs: torch.Tensor,
    target_probs: torch.Tensor,
    accept_uniforms: torch.Tensor,
    residual_uniforms: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Lossless rejection sampling (Leviathan et al. 2023, Algorithm 1).

    drafts:            [B, k] long, drafts sampled from draft_probs
    draft_probs:       [B, k, V] System 1's (tempered) probabilities q at the draft positions
    target_probs:      [B, k+1, V] System 2's (tempered) probabilities p
    accept_uniforms:   [B, k] in [0, 1); residual_uniforms: [B]
    returns accepted [B] long and next_token [B] long: a sample of norm(max(0, p − q)) at the
            first rejection, or of p after the last draft when all were accepted.
    """
    batch, k = drafts.shape
    q = draft_probs.gather(2, drafts[..., None]).squeeze(-1)  # [B, k]
    p = target_probs[:, :k].gather(2, drafts[..., None]).squeeze(-1)  # [B, k]
    # accept when u < p/q, written without dividing (q > 0: d was sampled from q)
    agree = (accept_uniforms * q < p).long()
    accepted = agree.cumprod(dim=1).sum(dim=1)  # [B]
    rows = torch.arange(batch, device=drafts.device)
    p_next = target_probs[rows, accepted]  # [B, V]
    q_next = torch.cat([draft_probs, torch.zeros_like(draft_probs[:, :1])], dim=1)[rows, accepted]
    residual = (p_next - q_next).clamp_min(0)  # q_next = 0 after a fully accepted round → p
    # p == q leaves no residual mass; a rejection is then impossible, but guard the rounding
    empty = residual.sum(dim=-1, keepdim=True) <= 0
    residual = torch.where(empty, p_next, residual)
    return accepted, sample_inverse_cdf(residual, residual_uniforms)


def tempered_probs(logprobs: torch.Tensor, temperature: float) -> torch.Tensor:
    """softmax(logits / T) from log-softmax'd logits (the same thing: they differ by a constant)."""
    return torch.softmax(logprobs / temperature, dim=-1)


# ---------------------------------------------------------------------------------------------
# per-request bookkeeping


@dataclass
class _Row:
    request_id: int
    generator: torch.Generator | None  # sampling only
    pending_small: list[int]  # tokens System 1 has not processed yet (starts as the prompt's last)
    pending_large: list[int]  # tokens System 2 has not processed yet
    tokens: list[int] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    rounds: int = 0
    # index into `records` of a bonus token whose System 1 stats are known only after System 1
    # has processed the last draft of the round (next round's first block, or a final forward)
    bonus_record: int | None = None


def _s1_fields(logprobs: torch.Tensor, top_k: int) -> list[dict]:
    """System 1's trace columns for each row of logprobs [N, V], as plain Python values."""
    summary = summarize(logprobs, top_k)
    columns = {
        "s1_token_id": summary.argmax.tolist(),
        "s1_top1_prob": summary.top1_prob.tolist(),
        "s1_top2_prob": summary.top2_prob.tolist(),
        "s1_entropy": summary.entropy.tolist(),
    }
    if top_k:
        columns["s1_topk_probs"] = summary.topk_probs.tolist()
        columns["s1_topk_ids"] = summary.topk_ids.tolist()
    return [dict(zip(columns, values)) for values in zip(*columns.values())]


def _fill_bonus(row: _Row, fields: dict) -> None:
    record = row.records[row.bonus_record]
    record.update(fields)
    record["intervened"] = record["token_id"] != record["s1_token_id"]
    row.bonus_record = None


# ---------------------------------------------------------------------------------------------
# one round: draft, verify, record


def draft_round(small: CachedModel, live: list[_Row], k: int, uniforms, config: DecodeConfig, filler: int):
    """System 1 reads its unseen tokens as one block, then drafts k tokens (k - 1 more forwards).

    Fills in a pending bonus token's System 1 fields from the block (its distribution at the bonus
    is read at the block's second-to-last slot). Returns drafts [B, k] and their log-probs [B, k, V].
    """
    tokens, valid = right_align([r.pending_small for r in live], filler)
    logprobs = small.forward(tokens, valid)  # [B, T, V]
    if any(r.bonus_record is not None for r in live):
        # the block is [last draft, bonus]; S1's distribution at the bonus is at -2
        fields = _s1_fields(logprobs[:, -2], config.top_k)
        for b, r in enumerate(live):
            if r.bonus_record is not None:
                _fill_bonus(r, fields[b])
    draft_logprobs, drafts = [], []
    step_logprobs = logprobs[:, -1]  # [B, V]
    for i in range(k):
        draft_logprobs.append(step_logprobs)
        if uniforms is not None:
            draft = sample_inverse_cdf(tempered_probs(step_logprobs, config.temperature), uniforms[:, i])
        else:
            draft = step_logprobs.argmax(dim=-1)
        drafts.append(draft)
        if i < k - 1:
            step_logprobs = small.forward(draft[:, None], torch.ones_like(draft[:, None], dtype=torch.bool))[:, -1]
    return torch.stack(drafts, dim=1), torch.stack(draft_logprobs, dim=1)  # [B, k], [B, k, V]


def verify_round(large: CachedModel, small: CachedModel, live: list[_Row], drafts, draft_logprobs, uniforms,
                 config: DecodeConfig, filler: int):
    """System 2 reads its unseen tokens + the k drafts in one forward and accepts a prefix.

    Rejected drafts are rolled back in both caches (System 2 holds all k, System 1 the first k - 1).
    Returns accepted [B] (0..k), next_token [B] and System 2's log-probs [B, k+1, V].
    """
    k, K = drafts.shape[1], config.k
    pending, pending_valid = right_align([r.pending_large for r in live], filler)
    pending, pending_valid = pending.to(large.device), pending_valid.to(large.device)
    block = torch.cat([pending, drafts.to(large.device)], dim=1)
    block_valid = torch.cat([pending_valid, torch.ones_like(drafts, dtype=torch.bool, device=large.device)], dim=1)
    target_logprobs = large.forward(block, block_valid)[:, -(k + 1):].to(small.device)  # [B, k+1, V]
    if uniforms is not None:
        accepted, next_token = rejection_accept(
            drafts,
            tempered_probs(draft_logprobs, config.temperature),
            tempered_probs(target_logprobs, config.temperature),
            uniforms[:, K : K + k],
            uniforms[:, 2 * K],
        )
    else:
        accepted, next_token = greedy_accept(drafts, target_logprobs)
    large.discard_last(k - accepted)
    small.discard_last((k - 1 - accepted).clamp_min(0))
    return accepted, next_token, target_logprobs


def record_round(live: list[_Row], drafts, draft_logprobs, target_logprobs, accepted, next_token,
                 stop: StopCriteria, top_k: int) -> tuple[list[int], list[int]]:
    """Append each row's accepted drafts and System 2's next token with their trace records.

    Applies the stop criteria (a finished row's tokens and records are cut at its stop). Returns
    (rows that finished, finished rows whose kept bonus token still needs System 1's fields).
    """
    k = drafts.shape[1]
    # one .tolist() per tensor, then plain Python
    s1 = _s1_fields(draft_logprobs.flatten(0, 1), top_k)  # row b, draft j at b * k + j
    s2 = summarize(target_logprobs.flatten(0, 1), 0)
    s2_top1 = s2.top1_prob.view(-1, k + 1).tolist()  # [B][k+1]
    s2_entropy = s2.entropy.view(-1, k + 1).tolist()
    accepted_list, next_list, draft_list = accepted.tolist(), next_token.tolist(), drafts.tolist()
    finishing, needs_final_s1 = [], []
    for b, r in enumerate(live):
        n = accepted_list[b]
        new_tokens = draft_list[b][:n] + [next_list[b]]
        start = len(r.tokens)
        for j, token in enumerate(new_tokens):
            record = {
                "position": start + j,
                "token_id": token,
                "s2_called": True,
                "s2_top1_prob": s2_top1[b][j],
                "s2_entropy": s2_entropy[b][j],
                "round": r.rounds,
                "drafted": j < n,
            }
            if j < k:
                record.update(s1[b * k + j])
                record["intervened"] = token != record["s1_token_id"]
            r.records.append(record)
        if n == k:
            r.bonus_record = len(r.records) - 1
        r.tokens.extend(new_tokens)
        r.rounds += 1
        r.pending_small = ([draft_list[b][-1]] if n == k else []) + [next_list[b]]
        r.pending_large = [next_list[b]]
        keep = stop.finished_length(r.tokens, checked=start)
        if keep is not None:
            del r.tokens[keep:], r.records[keep:]
            if r.bonus_record is not None and r.bonus_record >= keep:
                r.bonus_record = None
            finishing.append(b)
            if r.bonus_record is not None:
                needs_final_s1.append(b)
    return finishing, needs_final_s1


# ---------------------------------------------------------------------------------------------
# the decoding loop


def _start_rows(systems, prompt_ids, request_ids, config: DecodeConfig, small: CachedModel, large: CachedModel,
                filler: int) -> list[_Row]:
    """Prefill both caches with all but each prompt's last token; one bookkeeping row per request."""
    # logits for one slot only: [B, T, V] log-probs of a long prompt over a large vocabulary
    # would cost gigabytes and are never read
    heads = [list(p[:-1]) for p in prompt_ids]
    if any(heads):
        tokens, valid = right_align(heads, filler)
        small.forward(tokens, valid, last_only=True)
        large.forward(tokens, valid, last_only=True)
    rows = []
    for prompt, rid in zip(prompt_ids, request_ids):
        gen = torch.Generator().manual_seed(config.seed + int(rid)) if config.temperature > 0 else None
        rows.append(_Row(int(rid), gen, [prompt[-1]], [prompt[-1]]))
    return rows


@torch.no_grad()
def speculative_batch(
    systems, prompt_ids: list[list[int]], request_ids: list[int], config: DecodeConfig, stop: StopCriteria
) -> list[tuple[list[int], pd.DataFrame]]:
    """Decode a batch; per request, in order: generated token ids and its trace rows."""
    if systems.small is None or systems.large is None:
        raise ValueError("speculative decoding needs both the small and the large model")
    if len(prompt_ids) != len(request_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(request_ids)} request ids")
    if any(not p for p in prompt_ids):
        raise ValueError("speculative_batch got an empty prompt; decode() replaces them with BOS")
    K, top_k = config.k, config.top_k
    filler = systems.tokenizer.pad_token_id or 0
    small = CachedModel(systems.small, systems.vocab_size, len(prompt_ids))
    large = CachedModel(systems.large, systems.vocab_size, len(prompt_ids))
    rows = _start_rows(systems, prompt_ids, request_ids, config, small, large, filler)
    active = list(range(len(rows)))  # indices into `rows`, in cache row order

    while active:
        live = [rows[i] for i in active]
        # draft no more than the longest remaining budget (rows with less are cut afterwards;
        # a row's tokens up to its own budget do not depend on this k, see module docstring)
        k = max(1, min(K, max(stop.max_new_tokens - len(r.tokens) for r in live)))
        uniforms = None
        if config.temperature > 0:  # fixed draws per round: K draft + K accept + 1 residual uniforms
            uniforms = torch.stack([torch.rand(2 * K + 1, generator=r.generator) for r in live]).to(small.device)
        drafts, draft_logprobs = draft_round(small, live, k, uniforms, config, filler)
        accepted, next_token, target_logprobs = verify_round(large, small, live, drafts, draft_logprobs, uniforms,
                                                             config, filler)
        finishing, needs_final_s1 = record_round(live, drafts, draft_logprobs, target_logprobs, accepted,
                                                 next_token, stop, top_k)
        if needs_final_s1:
            # the bonus token is kept but System 1 never saw the last draft: one forward for it
            last_draft = drafts[:, -1:]  # [B, 1]
            only = torch.zeros_like(last_draft, dtype=torch.bool)
            only[needs_final_s1] = True
            fields = _s1_fields(small.forward(last_draft, only)[:, -1], top_k)
            for b in needs_final_s1:
                _fill_bonus(live[b], fields[b])
        if finishing:
            done = set(finishing)
            keep_rows = [b for b in range(len(live)) if b not in done]
            active = [active[b] for b in keep_rows]
            if active:
                index = torch.tensor(keep_rows, dtype=torch.long)
                small.select_rows(index)
                large.select_rows(index)

    return [(r.tokens, records_to_frame(r.request_id, r.records, top_k > 0)) for r in rows]
