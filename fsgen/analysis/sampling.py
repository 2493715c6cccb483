"""Collaboration under sampling: how often System 2 rejects System 1's draft, across seeds (#13).

Speculative decoding with temperature > 0 (lossless rejection sampling) accepts a drafted token
with probability min(1, p/q); a rejected draft is replaced by System 2's own sample (a
correction). A speculative trace records each round's accepted drafts (`drafted`) and System 2's
token after them (`fsgen.analysis.acceptance.system2_token_roles`: a correction, or the bonus
token after a fully accepted round). A *judged* position is one where System 2 ruled on a draft:
an accepted draft or a correction (drafts after a rejection are never judged; a bonus token was
not drafted). The *rejection share* is corrections / judged positions.

Greedy (temperature 0), a draft is rejected exactly where System 1's argmax differs from System
2's, so the greedy run's rejection share is the greedy mismatch share on the same footing.
Sampling seeds make one job each (config `seeds:`, variants `<name>-seed<N>`); per pair, the
seeds' shares give a mean and a 95% t-interval across seeds.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from fsgen.analysis.acceptance import system2_token_roles
from fsgen.analysis.stats import bool_column

PAIR_KEYS = ["benchmark", "large", "small"]


def rejection_counts(trace: pd.DataFrame, k: int) -> dict:
    """{tokens, judged, rejected, rejection_share} of one speculative trace drafted `k` at a time."""
    _, correction = system2_token_roles(trace, k)
    accepted = bool_column(trace, "drafted") if len(trace) else np.zeros(0, bool)
    judged, rejected = int(accepted.sum() + correction.sum()), int(correction.sum())
    return {"tokens": int(len(trace)), "judged": judged, "rejected": rejected,
            "rejection_share": rejected / judged if judged else math.nan}


def seed_interval(values, level: float = 0.95) -> tuple[float, float, float, float]:
    """(mean, sd, low, high) of per-seed values: a Student-t interval for the mean over seeds
    (NaN bounds and sd with one seed)."""
    values = np.asarray(values, dtype=np.float64)
    values = values[np.isfinite(values)]
    if not len(values):
        return (math.nan,) * 4
    mean = float(values.mean())
    if len(values) < 2:
        return mean, math.nan, math.nan, math.nan
    sd = float(values.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, len(values) - 1)) * sd / math.sqrt(len(values))
    return mean, sd, mean - half, mean + half


def rejection_by_pair(runs: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per pair and sampled setting: the rejection share across seeds, beside the greedy share.

    runs: one row per speculative job with columns benchmark, large, small, variant (the full
    variant name, `<name>-seed<N>` for a seeds sweep), temperature, judged, rejected
    (`rejection_counts`). Sampled rows (temperature > 0) are grouped by (benchmark, large,
    small, setting) where the setting is the variant without its seed suffix
    (`fsgen.pipeline.jobs.split_seed_variant`); each seed's share is rejected / judged.
    Returns benchmark, large, small, setting, temperature, n_seeds, rejection_share (mean over
    seeds), rejection_sd, rejection_low, rejection_high (t-interval at `level`), and
    greedy_mismatch_share: the pooled rejection share of the pair's greedy speculative runs
    (temperature 0; NaN when there are none).
    """
    from fsgen.pipeline.jobs import split_seed_variant

    runs = runs.assign(setting=[split_seed_variant(v)[0] for v in runs["variant"]],
                       share=runs["rejected"] / runs["judged"].where(runs["judged"] > 0))
    sampled = runs[runs["temperature"] > 0]
    greedy = runs[runs["temperature"] == 0].groupby(PAIR_KEYS)[["rejected", "judged"]].sum()
    rows = []
    for (*pair, setting), group in sampled.groupby(PAIR_KEYS + ["setting"], sort=True):
        mean, sd, low, high = seed_interval(group["share"], level)
        key = tuple(pair)
        greedy_share = (greedy.loc[key, "rejected"] / greedy.loc[key, "judged"]
                        if key in greedy.index and greedy.loc[key, "judged"] > 0 else math.nan)
        rows.append({**dict(zip(PAIR_KEYS, pair)), "setting": setting,
                     "temperature": float(group["temperature"].iloc[0]), "n_seeds": int(group["share"].notna().sum()),
                     "rejection_share": mean, "rejection_sd": sd, "rejection_low": low, "rejection_high": high,
                     "greedy_mismatch_share": float(greedy_share)})
    columns = PAIR_KEYS + ["setting", "temperature", "n_seeds", "rejection_share", "rejection_sd",
                           "rejection_low", "rejection_high", "greedy_mismatch_share"]
    return pd.DataFrame(rows, columns=columns)


def sampled(temperature) -> np.ndarray | bool:
    """Whether a decode sampled (temperature > 0); an unset temperature (NaN, None) is greedy."""
    scalar = temperature is None or np.isscalar(temperature)
    values = pd.to_numeric(pd.Series([temperature] if scalar else temperature), errors="coerce").fillna(0.0)
    return bool(values.iloc[0] > 0) if scalar else values.to_numpy() > 0


def is_sampled(record: dict) -> bool:
    """A stats.json record of a sampled decode (its `decode.temperature` > 0)."""
    return sampled((record.get("decode") or {}).get("temperature"))


def sampling_table(records: list[dict], level: float = 0.95) -> pd.DataFrame:
    """`rejection_by_pair` over the speculative jobs' `sampling` blocks (stats.json), with a status
    saying what is missing: one seed (no interval), no greedy run of the pair, no judged draft."""
    runs = pd.DataFrame([{**{k: rec["job"].get(k) for k in (*PAIR_KEYS, "variant")},
                          "temperature": float((rec.get("decode") or {}).get("temperature") or 0.0),
                          "judged": rec["sampling"]["judged"], "rejected": rec["sampling"]["rejected"]}
                         for rec in records if rec.get("sampling")],
                        columns=[*PAIR_KEYS, "variant", "temperature", "judged", "rejected"])
    table = rejection_by_pair(runs, level) if len(runs) else pd.DataFrame()
    if table.empty:
        why = ("no sampled speculative run (temperature > 0; config methods.<name>.temperature and seeds)"
               if not len(runs) or not (runs["temperature"] > 0).any() else "no sampled run with judged drafts")
        return pd.DataFrame([{"status": why}], columns=[*PAIR_KEYS, "setting", "temperature", "n_seeds",
                                                        "rejection_share", "rejection_sd", "rejection_low",
                                                        "rejection_high", "greedy_mismatch_share", "status"])
    reasons = [[r for r in (
        "no judged draft (no tokens)" if not np.isfinite(row.rejection_share) else None,
        "one seed: no interval across seeds" if row.n_seeds < 2 else None,
        "no greedy speculative run of this pair" if not np.isfinite(row.greedy_mismatch_share) else None) if r]
        for row in table.itertuples()]
    return table.assign(status=["; ".join(r) or "ok" for r in reasons])
