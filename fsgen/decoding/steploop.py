"""The token-by-token loop shared by small, large, oracle, contrastive and proxy decoding.

Each step, System 1 reads the last token of every row and gives its next-token distribution;
the router picks the rows for which System 2 is consulted. A consulted row feeds System 2 all
the tokens it has not seen yet (the prompt on its first consultation, then every token decided
since its last consultation) in one right-aligned block, so System 2's cache catches up in one
forward pass and nothing is recomputed per token. Rows that finish leave the batch
(`CachedModel.select_rows`), so a row's tokens never depend on the other rows.

Which model is System 1 and which models System 2's side reads come from the method's registry
entry (`fsgen.decoding.methods`): e.g. oracle and contrastive read small / large, proxy reads
small_tuned / large + small (base); a lone model (`single`) is recorded as System 1. Where
System 2's side reads a base small model that is not System 1 (proxy), its argmax is recorded
too (`s1_base_token_id`).
"""

from __future__ import annotations

import math

import torch

from fsgen.decoding.config import DecodeConfig
from fsgen.decoding.distributions import summarize
from fsgen.decoding.methods import get_method
from fsgen.decoding.routers import NeverRouter, Router
from fsgen.decoding.kvcache import CachedModel, right_align
from fsgen.decoding.stopping import StopCriteria


@torch.no_grad()
def step_batch(
    systems, prompt_ids: list[list[int]], config: DecodeConfig, router: Router, stop: StopCriteria
) -> list[tuple[list[int], list[dict]]]:
    """Decode one batch step by step. Returns per row (generated ids, per-position trace dicts)."""
    method = get_method(config.method)
    if not method.consults_system2:
        router = NeverRouter()
    batch = len(prompt_ids)
    filler = systems.tokenizer.pad_token_id or 0
    s1 = CachedModel(systems.model(method.system1), systems.vocab_size, batch)
    s2_side = [CachedModel(systems.model(role), systems.vocab_size, batch) for role in method.system2]
    summary_k = max(config.top_k, router.top_k)
    base_side = base_small_index(method)  # where System 2's side holds the base small model (proxy)

    rows = list(range(batch))  # original row of each live batch row
    s1_pending = [list(p) for p in prompt_ids]  # tokens System 1 has not read yet, per live row
    s2_pending = [list(p) for p in prompt_ids]  # tokens System 2 has not read yet, per live row
    if s2_side and not isinstance(router, NeverRouter) and max(len(p) for p in prompt_ids) > 1:
        s2_pending = _prefill_system2(s2_side, prompt_ids, filler)
    generated: list[list[int]] = [[] for _ in range(batch)]
    records: list[list[dict]] = [[] for _ in range(batch)]

    while rows:
        s1_logprobs = s1.forward(*right_align(s1_pending, filler), last_only=True)[:, -1]  # [B, V]
        s1_sum = summarize(s1_logprobs, summary_k)
        tokens = s1_sum.argmax.clone()  # [B]
        consult = router.consult(s1_sum).to(tokens.device)  # [B] bool
        s2_top1 = s2_entropy = s1_base = [math.nan] * len(rows)
        if bool(consult.any()):
            s2_logprobs = _consult(s2_side, s2_pending, consult, filler, tokens.device)  # [B, V] each
            picked = method.score(config, s1_logprobs, s2_logprobs).argmax(dim=-1)
            tokens = torch.where(consult, picked, tokens)
            s2_top1, s2_entropy, s1_base = _system2_columns(s2_logprobs, base_side)
            s2_pending = [[] if c else pending for pending, c in zip(s2_pending, consult.tolist())]

        step = _step_columns(tokens, s1_sum, consult, config.top_k)
        keep = []
        for i, row in enumerate(rows):
            token = step["token_id"][i]
            record = {name: values[i] for name, values in step.items()}
            record["position"] = len(generated[row])
            if record["s2_called"]:
                record["s2_top1_prob"], record["s2_entropy"] = s2_top1[i], s2_entropy[i]
                if base_side is not None:
                    record["s1_base_token_id"] = s1_base[i]
            generated[row].append(token)
            records[row].append(record)
            if stop.finished_length(generated[row], checked=len(generated[row]) - 1) is None:
                keep.append(i)
                s1_pending[i] = [token]
                s2_pending[i].append(token)
        if not keep:
            break
        if len(keep) < len(rows):
            index = torch.tensor(keep, dtype=torch.long)
            for model in [s1, *s2_side]:
                model.select_rows(index)
            rows = [rows[i] for i in keep]
            s1_pending = [s1_pending[i] for i in keep]
            s2_pending = [s2_pending[i] for i in keep]
    return list(zip(generated, records))


def base_small_index(method) -> int | None:
    """Index in System 2's side of the base small model when System 1 is another model (proxy:
    System 1 is the tuned small model, System 2's side reads large + base small); else None.
    The trace records that model's argmax (`s1_base_token_id`): the FS-GEN authors count a proxy
    intervention where the token differs from it."""
    if "small" in method.system2 and method.system1 != "small":
        return method.system2.index("small")
    return None


def _system2_columns(s2_logprobs: list, base_side: int | None) -> tuple[list, list, list]:
    """(top-1 probability, entropy) of System 2 (the large model, first of its side) and the
    base small model's argmax (NaN without one) per row, as Python lists."""
    s2_sum = summarize(s2_logprobs[0])
    base = s2_logprobs[base_side].argmax(dim=-1).tolist() if base_side is not None else [math.nan] * len(s2_logprobs[0])
    return s2_sum.top1_prob.tolist(), s2_sum.entropy.tolist(), base


def _prefill_system2(s2_side: list[CachedModel], prompt_ids: list[list[int]], filler: int) -> list[list[int]]:
    """Prefill System 2 with every prompt but its last token, all rows in one block.

    Rows first consulted at different steps would otherwise each add a prompt-wide block of
    holes to everyone's cache. The last token stays pending (returned per row) so a consultation
    always has a token to read the next-token distribution from.
    """
    prefix = right_align([p[:-1] for p in prompt_ids], filler)
    for model in s2_side:
        model.forward(*prefix, last_only=True)
    return [[p[-1]] for p in prompt_ids]


def _consult(s2_side: list[CachedModel], s2_pending: list[list[int]], consult, filler: int, device) -> list:
    """System 2's side reads the consulted rows' pending tokens in one catch-up block.

    Returns each System 2 model's next-token log-probs [B, V] (meaningful for consulted rows).
    """
    blocks = [pending if c else [] for pending, c in zip(s2_pending, consult.tolist())]
    block = right_align(blocks, filler)
    return [model.forward(*block, last_only=True)[:, -1].to(device) for model in s2_side]


def _step_columns(tokens, s1_sum, consult, top_k: int) -> dict[str, list]:
    """Trace columns of one step as Python lists (one .tolist() per tensor, not per row)."""
    token_id = tokens.tolist()
    s1_token = s1_sum.argmax.tolist()
    columns = {
        "token_id": token_id,
        "s1_token_id": s1_token,
        "s2_called": consult.tolist(),
        "intervened": [t != s for t, s in zip(token_id, s1_token)],
        "s1_top1_prob": s1_sum.top1_prob.tolist(),
        "s1_top2_prob": s1_sum.top2_prob.tolist(),
        "s1_entropy": s1_sum.entropy.tolist(),
    }
    if top_k:
        columns["s1_topk_probs"] = s1_sum.topk_probs[:, :top_k].tolist()
        columns["s1_topk_ids"] = s1_sum.topk_ids[:, :top_k].tolist()
    return columns
