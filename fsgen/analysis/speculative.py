"""Speculative decoding: measured acceptance from a speculative trace, predicted from an oracle trace.

A verification round drafts K tokens with System 1; System 2 accepts the longest agreeing prefix
(`accepted` tokens, 0…K) and then emits one token of its own (the correction, or the bonus token
when all K were accepted). Conventions:
- acceptance rate = accepted drafts / (rounds · K);
- accepted length of a round = 1 + accepted (tokens emitted per System 2 forward pass; the "+1"
  is System 2's own token, as in Leviathan et al. 2023);
- System 2 forward passes per generated token = rounds / tokens.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fsgen.analysis.stats import bool_column

PREDICT_KS = tuple(range(1, 9))  # draft lengths predicted from oracle traces


def summarize_rounds(accepted: np.ndarray, k: int, n_tokens: int) -> dict:
    """Acceptance figures from per-round accepted-draft counts.

    accepted: [rounds] accepted drafts per round, each in 0…k.
    """
    accepted = np.asarray(accepted, dtype=np.int64)  # [rounds]
    rounds = len(accepted)
    if rounds == 0:
        return {"k": k, "rounds": 0, "acceptance_rate": math.nan, "mean_accepted_length": math.nan,
                "s2_passes_per_token": math.nan}
    return {
        "k": int(k),
        "rounds": int(rounds),
        "acceptance_rate": float(accepted.sum() / (rounds * k)),
        "mean_accepted_length": float(1.0 + accepted.mean()),
        "s2_passes_per_token": float(rounds / n_tokens) if n_tokens else math.nan,
    }


def measured_accepted(trace: pd.DataFrame) -> np.ndarray:
    """[rounds] accepted drafts per (request, round) of a speculative trace."""
    if "round" not in trace.columns or trace["round"].isna().all():
        raise ValueError("not a speculative trace: column 'round' is missing or all null")
    rows = trace.dropna(subset=["round"])
    drafted = pd.Series(bool_column(rows, "drafted").astype(np.int64), index=rows.index)
    per_round = drafted.groupby([rows["request_id"], rows["round"]]).sum()
    return per_round.to_numpy()


def measured_acceptance(trace: pd.DataFrame, k: int) -> dict:
    """Acceptance figures and accepted-draft histogram (counts for 0…k) of a speculative trace."""
    accepted = measured_accepted(trace)  # [rounds]
    if len(accepted) and accepted.max() > k:
        raise ValueError(f"a round accepted {accepted.max()} drafts but k={k}; wrong k in metadata?")
    out = summarize_rounds(accepted, k, len(trace))
    out["accepted_hist"] = np.bincount(accepted, minlength=k + 1).tolist()
    return out


def simulate_rounds(agree: np.ndarray, k: int) -> np.ndarray:
    """Greedy speculative rounds over one request's oracle trace.

    agree: [T] bool, System 1's argmax equals System 2's token at each position. Each round
    accepts the run of agreeing positions from its start (at most k), then System 2 emits one
    token; the next round starts after it. Returns [rounds] accepted counts.
    """
    agree = np.asarray(agree, dtype=bool)  # [T]
    n = len(agree)
    # run[i] = number of consecutive agreeing positions starting at i
    run = np.zeros(n + 1, dtype=np.int64)
    for i in range(n - 1, -1, -1):
        run[i] = run[i + 1] + 1 if agree[i] else 0
    accepted = []
    pos = 0
    while pos < n:
        a = int(min(run[pos], k, n - pos))
        accepted.append(a)
        pos += a + 1  # the accepted drafts and System 2's own token
    return np.asarray(accepted, dtype=np.int64)


def predicted_acceptance(oracle_trace: pd.DataFrame, ks=PREDICT_KS) -> list[dict]:
    """Acceptance figures greedy speculative decoding would reach, for each K, from an oracle trace.

    Valid for an oracle run with router `always` (System 2 decides every token, so the oracle's
    output is exactly the greedy speculative output and `intervened` marks disagreement).
    """
    ordered = oracle_trace.sort_values(["request_id", "position"])
    agree = ~bool_column(ordered, "intervened")  # [N]
    request = ordered["request_id"].to_numpy()
    bounds = np.flatnonzero(np.diff(request)) + 1
    per_request = np.split(agree, bounds)
    out = []
    for k in ks:
        accepted = np.concatenate([simulate_rounds(a, k) for a in per_request]) if len(agree) else np.array([], int)
        row = summarize_rounds(accepted, k, len(agree))
        row["accepted_hist"] = np.bincount(accepted, minlength=k + 1).tolist()
        out.append(row)
    return out
