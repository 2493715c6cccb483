"""Collaboration frequencies under other definitions than fsgen's own, side by side (#13).

Proxy tuning (System 1 = the tuned small model; System 2's side = large + base small):
- `freq_proxy_tuned` (fsgen's `freq_pooled`): a position is an intervention where the token
  differs from the *tuned* small model's argmax (`intervened`), over all generated tokens;
- `freq_proxy_base` (the FS-GEN authors' released code, `__proxy_finetune`): where System 2's side
  was consulted and the token differs from the *base* small model's argmax
  (`s1_base_token_id`), over all generated tokens. Positions where System 2 was not consulted
  are never interventions (the base model is not read there), as in their code.
Both pooled, with 95% request-bootstrap intervals (`fsgen.analysis.stats.bootstrap_frequency`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from fsgen.analysis.stats import bool_column, bootstrap_frequency

BASE_COLUMN = "s1_base_token_id"


def base_interventions(trace: pd.DataFrame) -> np.ndarray | None:
    """[N] bool: consulted positions whose token differs from the base small model's argmax;
    None when the trace has no base argmax (not proxy, or written before the column existed)."""
    if BASE_COLUMN not in trace.columns or trace[BASE_COLUMN].isna().all():
        return None
    consulted = bool_column(trace, "s2_called")
    base = trace[BASE_COLUMN]
    recorded = base.notna().to_numpy()
    if (consulted & ~recorded).any():
        raise ValueError(f"trace has consulted positions without {BASE_COLUMN}: a mixed or damaged proxy trace")
    token = trace["token_id"].to_numpy(dtype=np.int64)
    differs = np.zeros(len(trace), dtype=bool)
    differs[recorded] = token[recorded] != base[recorded].to_numpy(dtype=np.int64)
    return consulted & differs


def proxy_frequencies(trace: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> dict:
    """freq_proxy_tuned and freq_proxy_base (with _low/_high, pooled) and their counts.

    `freq_proxy_base` is NaN (count None) for a trace without the base argmax.
    """
    tuned = bool_column(trace, "intervened")
    base = base_interventions(trace)
    out = {"n_tokens": int(len(trace)), "n_interventions_tuned": int(tuned.sum()),
           "n_interventions_base": None if base is None else int(base.sum())}
    definitions = {"freq_proxy_tuned": tuned, "freq_proxy_base": base}
    for name, flags in definitions.items():
        if flags is None:
            out.update({name: math.nan, f"{name}_low": math.nan, f"{name}_high": math.nan})
            continue
        counts = pd.DataFrame({"request_id": trace["request_id"].to_numpy(), "tokens": 1,
                               "hits": flags.astype(np.int64)}).groupby("request_id")[["hits", "tokens"]].sum()
        pooled, _ = bootstrap_frequency(counts["hits"].to_numpy(), counts["tokens"].to_numpy(), n_boot, seed)
        out.update({name: pooled.value, f"{name}_low": pooled.low, f"{name}_high": pooled.high})
    return out


PROXY_FREQUENCIES = [f"{name}{end}" for name in ("freq_proxy_tuned", "freq_proxy_base") for end in ("", "_low", "_high")]

# The FS-GEN authors' definition of each method's frequency: the jobs-table column that holds it
# and how to say it (the paper comparison names it per row). Methods not listed: fsgen's own
# `freq_pooled` (a token that differs from System 1's argmax), which is also theirs.
AUTHORS_DEFINITIONS = {
    "proxy": ("freq_proxy_base", "authors': token ≠ the base small model's argmax where System 2 was consulted "
                                 "(fsgen's freq_pooled compares with the tuned small model)"),
    "speculative": ("freq_corrections", "authors': System 2's corrections only (bonus tokens not counted)"),
}
SAME_DEFINITION = ("freq_pooled", "authors' and fsgen's: token ≠ System 1's argmax")
MISSING_DEFINITION = {"proxy": "authors' definition not available: the trace has no s1_base_token_id "
                               "(decoded before fsgen recorded the base small model's argmax)"}


def authors_definition(method: str) -> tuple[str, str]:
    """(jobs-table column, description) of the FS-GEN authors' frequency for `method`."""
    return AUTHORS_DEFINITIONS.get(method, SAME_DEFINITION)
