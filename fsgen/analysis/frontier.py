"""The tables of rule `frontier`: `fsgen.analysis.cost.frontier_tables` with a `status` on every row.

A point or band row without a value says why: the pair's benchmark has no per-document metric
(its gap row's status), a setting has no cost under the model (wall time without a benchmark
file), or the grid lies below the cheapest setting. With no pair at all, each table is one row
saying so (fsgen.analysis.status).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fsgen.analysis.cost import KEY, frontier_tables
from fsgen.analysis.status import OK, explain_empty

NO_PAIR = "no pair job with per-request costs and outcomes (or stats.json without its requests block)"


def _pair_reason(rows: pd.DataFrame, gaps: pd.DataFrame) -> pd.Series:
    """Per row, its pair and cost model's gap status when that is not ok (e.g. no accuracy)."""
    reason = gaps.set_index(KEY)["status"] if len(gaps) else pd.Series(dtype=object)
    keyed = pd.MultiIndex.from_frame(rows[KEY]) if len(rows) else pd.MultiIndex.from_tuples([], names=KEY)
    found = reason.reindex(keyed).to_numpy()
    return pd.Series(np.where(pd.isna(found), OK, found), index=rows.index, dtype=object)


def with_status(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Add `status` to frontier_points and frontier_bands (gap_recovery has its own)."""
    points, bands, gaps = (tables[n].copy() for n in ("frontier_points", "frontier_bands", "gap_recovery"))
    pair = _pair_reason(points, gaps)
    no_accuracy = points["accuracy"].isna()
    points["status"] = np.select(
        [no_accuracy & pair.str.startswith("no accuracy"), no_accuracy, points["cost"].isna()],
        [pair, "no scored request in this setting", "no cost under this model (wall time: no benchmark file)"], OK)
    pair = _pair_reason(bands, gaps)
    missing = bands["accuracy"].isna()
    bands["status"] = np.select([missing & pair.str.startswith("no accuracy"), missing],
                                [pair, "below the cheapest setting on the frontier"], OK)
    return {"frontier_points": points, "frontier_bands": bands, "gap_recovery": gaps}


def frontier_outputs(requests: pd.DataFrame, n_boot: int = 1000, seed: int = 0, fraction: float = 0.9
                     ) -> dict[str, pd.DataFrame]:
    """frontier_points, frontier_bands, gap_recovery of every pair, each row with a status."""
    tables = with_status(frontier_tables(requests, n_boot=n_boot, seed=seed, fraction=fraction))
    return {name: explain_empty(table, NO_PAIR) for name, table in tables.items()}
