"""Speculative decoding: measured acceptance from a speculative trace, predicted from an oracle trace.

A verification round drafts K tokens with System 1; System 2 accepts the longest agreeing prefix
(`accepted` tokens, 0…K) and then emits one token of its own (the correction, or the bonus token
when all K were accepted). Conventions:
- acceptance rate = accepted drafts / (rounds · K);
- accepted length of a round = 1 + accepted (tokens emitted per System 2 forward pass; the "+1"
  is System 2's own token, as in Leviathan et al. 2023);
- System 2 forward passes per generated token = rounds / tokens.

Two speculative collaboration frequencies (both over all generated tokens, with request-bootstrap
intervals as `fsgen.analysis.stats.bootstrap_frequency`):
- `freq_s2_tokens`: every token System 2 emitted itself (not an accepted draft): the corrections
  and the bonus tokens;
- `freq_corrections`: corrections only, i.e. System 2's token at a rejected draft. This is what
  the FS-GEN authors count (their released `__speculative_decode` adds to `mismatch_tokens_num`
  at a rejected draft only; the bonus token after a fully accepted round is counted in the total
  but never as a mismatch).
The pooled `freq_pooled` of every job stays `intervened / tokens`; for speculative traces it
counts the corrections and those bonus tokens that differ from System 1's own argmax.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fsgen.analysis.stats import bool_column, bootstrap_frequency

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


def system2_token_roles(trace: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray]:
    """([N] System 2's own token, [N] correction) for each row of a speculative trace.

    A round's rows are its accepted drafts (`drafted`) and then at most one token of System 2's
    own; that token is the bonus when the round accepted all `k` drafts, a correction otherwise.
    (A round drafts fewer than k only when every row of the batch is within k tokens of its
    budget, and then a bonus would pass the budget and is cut, so a kept bonus follows k drafts.)
    Rows without a round (not a speculative trace) are neither.
    """
    in_round = trace["round"].notna().to_numpy() if "round" in trace.columns else np.zeros(len(trace), bool)
    own = in_round & ~bool_column(trace, "drafted")  # [N]
    if not own.any():
        return own, own.copy()
    rows = trace[in_round]
    drafted_in_round = pd.Series(bool_column(rows, "drafted").astype(np.int64), index=rows.index).groupby(
        [rows["request_id"], rows["round"]]).transform("sum")  # [rows] accepted drafts of the row's round
    full_round = np.zeros(len(trace), bool)
    full_round[np.flatnonzero(in_round)] = drafted_in_round.to_numpy() >= k
    return own, own & ~full_round


def speculative_frequencies(trace: pd.DataFrame, k: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """freq_s2_tokens and freq_corrections (pooled, with 95% request-bootstrap intervals) and counts."""
    own, correction = system2_token_roles(trace, k)
    per_request = pd.DataFrame({"request_id": trace["request_id"].to_numpy(), "tokens": 1,
                                "own": own.astype(np.int64), "corrections": correction.astype(np.int64)})
    counts = per_request.groupby("request_id")[["tokens", "own", "corrections"]].sum()
    out = {"n_s2_tokens": int(own.sum()), "n_corrections": int(correction.sum())}
    for name, column in (("freq_s2_tokens", "own"), ("freq_corrections", "corrections")):
        pooled, _ = bootstrap_frequency(counts[column].to_numpy(), counts["tokens"].to_numpy(), n_boot, seed)
        out.update({name: pooled.value, f"{name}_low": pooled.low, f"{name}_high": pooled.high})
    return out


def speculative_record(trace: pd.DataFrame, k: int, n_boot: int = 1000, seed: int = 0) -> tuple[dict, dict]:
    """(acceptance figures for record["speculative"], frequencies for record["stats"]) of one job.

    An empty trace (no generated tokens) has no rounds: NaN figures, zero counts.
    """
    if len(trace) == 0:
        acceptance = summarize_rounds(np.array([], np.int64), k, 0) | {"accepted_hist": [0] * (k + 1)}
    else:
        acceptance = measured_acceptance(trace, k)
    return acceptance, speculative_frequencies(trace, k, n_boot, seed)
