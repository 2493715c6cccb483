"""What the trace records of a next-token distribution."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Summary:
    argmax: torch.Tensor  # [B] long
    top1_prob: torch.Tensor  # [B] float32
    top2_prob: torch.Tensor  # [B] float32
    entropy: torch.Tensor  # [B] float32, nats
    topk_probs: torch.Tensor | None = None  # [B, k] float32, descending
    topk_ids: torch.Tensor | None = None  # [B, k] long


def summarize(logprobs: torch.Tensor, top_k: int = 0) -> Summary:
    """logprobs: [B, V] log-softmax of one position per row."""
    probs = logprobs.exp()
    k = max(2, top_k)
    top_probs, top_ids = probs.topk(k, dim=-1)  # [B, k]
    # p·log p with 0·log 0 = 0 (log-probs of masked tokens are -inf)
    plogp = torch.where(probs > 0, probs * logprobs, torch.zeros_like(probs))
    return Summary(
        argmax=top_ids[:, 0],
        top1_prob=top_probs[:, 0],
        top2_prob=top_probs[:, 1],
        entropy=-plogp.sum(dim=-1),
        topk_probs=top_probs[:, :top_k] if top_k else None,
        topk_ids=top_ids[:, :top_k] if top_k else None,
    )
