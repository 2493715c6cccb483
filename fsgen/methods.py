"""Per-step scoring rules of the collaborative methods, as pure functions over log-probs.

Every input is a [B, V] float32 tensor of log-softmax values over the shared vocabulary:
`l` from the large model (System 2), `s` from the small model (System 1). Scores are on
log-probabilities; the chosen token is the argmax of the score.
"""

from __future__ import annotations

import math

import torch


def oracle_choice(l: torch.Tensor, s: torch.Tensor | None = None) -> torch.Tensor:
    """System 2 decides: the large model's argmax. l: [B, V] -> [B] long.

    `s` is accepted (and unused) so that every rule takes the same inputs; System 1's own
    argmax is recorded by the caller.
    """
    return l.argmax(dim=-1)


def plausible_mask(l: torch.Tensor, alpha: float) -> torch.Tensor:
    """Tokens the large model finds plausible: log p_l ≥ log α + max log p_l. [B, V] bool."""
    return l >= math.log(alpha) + l.max(dim=-1, keepdim=True).values


def contrastive_scores(
    l: torch.Tensor, s: torch.Tensor, alpha: float = 0.1, beta: float = 0.5, formula: str = "blend"
) -> torch.Tensor:
    """Contrastive decoding scores [B, V]; implausible tokens are -inf.

    blend:    s + β(l − s)     (the FS-GEN code's form)
    standard: (1 + β)l − βs    (Li et al.'s contrastive objective with an amateur weight β)
    """
    if formula == "blend":
        score = s + beta * (l - s)
    elif formula == "standard":
        score = (1 + beta) * l - beta * s
    else:
        raise ValueError(f"unknown contrastive formula {formula!r}; expected blend or standard")
    return score.masked_fill(~plausible_mask(l, alpha), float("-inf"))


def proxy_scores(l: torch.Tensor, s_tuned: torch.Tensor, s_base: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """Proxy tuning scores [B, V]: l + α(s_tuned − s_base)."""
    return l + alpha * (s_tuned - s_base)
