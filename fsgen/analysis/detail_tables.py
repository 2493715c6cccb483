"""Long-format aggregate tables of per-job details: AUROC, positions, histograms, speculative, routers.

Built from the `stats.json` records like `fsgen.analysis.tables`; every table has a `status`
column, and a job that could not give a table its rows gets a row saying why (fsgen.analysis.status).
"""

from __future__ import annotations

import math

import pandas as pd

from fsgen.analysis.routing import FAMILY_SIGNAL, ONLINE_COLUMNS, online_tradeoff, recall_at
from fsgen.analysis.sampling import is_sampled
from fsgen.analysis.stats import single_model
from fsgen.analysis.status import OK, explain_empty, token_status
from fsgen.analysis.uncertainty import SIGNALS, auroc_status

ID = ["benchmark", "variant", "method", "router", "large", "small"]
ROUTER_FAMILIES = [*FAMILY_SIGNAL, "learned"]
SINGLE_RUN = "single-model run (no System 2 decisions)"


def _num(value) -> float:
    return math.nan if value is None else float(value)


def _ids(rec: dict) -> dict:
    return {k: rec["job"].get(k) for k in ID}


def _missing_reason(rec: dict) -> str:
    return token_status(rec["stats"]) or "not computed"


def auroc_table(records) -> pd.DataFrame:
    """Per job × signal: AUROC over all positions and over consulted positions (`auroc_consulted`).

    Read `auroc_consulted`: for routed runs the positions a router skipped are non-interventions
    by construction, so the all-positions `auroc` is inflated there (equal for router `always`).
    """
    rows = []
    for rec in records:
        au, consulted = rec.get("auroc") or {}, rec.get("auroc_consulted")
        if single_model(rec["job"].get("method")):
            status = SINGLE_RUN
        elif not au:
            status = _missing_reason(rec)
        elif consulted is None:
            status = "consulted AUROC not computed (stats.json older than this table)"
        else:
            status = auroc_status(consulted, rec["stats"].get("n_tokens"))
        consulted = consulted or {}
        for signal in SIGNALS:
            rows.append({**_ids(rec), "signal": signal, "auroc": _num(au.get(signal)),
                         "n_intervened": au.get("n_intervened"), "n_kept": au.get("n_kept"),
                         "auroc_consulted": _num(consulted.get(signal)), "n_consulted": consulted.get("n_consulted"),
                         "n_intervened_consulted": consulted.get("n_intervened"),
                         "n_kept_consulted": consulted.get("n_kept"), "status": status})
    columns = [*ID, "signal", "auroc", "n_intervened", "n_kept", "auroc_consulted", "n_consulted",
               "n_intervened_consulted", "n_kept_consulted", "status"]
    return explain_empty(pd.DataFrame(rows, columns=columns), "no jobs")


def positions_table(records) -> pd.DataFrame:
    rows = []
    for rec in records:
        pos = rec.get("positions")
        if not pos:
            rows.append({**_ids(rec), "status": _missing_reason(rec)})
            continue
        n = len(pos["share"])
        status = OK if any(math.isfinite(_num(v)) for v in pos["share"]) else "no intervention"
        for i in range(n):
            rows.append({**_ids(rec), "bin": i, "bin_label": f"{100 * i // n}-{100 * (i + 1) // n}%",
                         "share": _num(pos["share"][i]), "rate": _num(pos["rate"][i]), "tokens": pos["tokens"][i],
                         "status": status})
    columns = [*ID, "bin", "bin_label", "share", "rate", "tokens", "status"]
    return explain_empty(pd.DataFrame(rows, columns=columns), "no jobs")


def histograms_table(records) -> pd.DataFrame:
    """Figure data: counts per signal bin, intervened vs kept (jobs without tokens have no rows)."""
    rows = []
    for rec in records:
        for signal, h in (rec.get("histograms") or {}).items():
            edges = h["edges"]
            for group in ("intervened", "kept"):
                for i, count in enumerate(h[group]):
                    rows.append({**_ids(rec), "signal": signal, "group": group, "bin_left": edges[i],
                                 "bin_right": edges[i + 1], "count": count})
    columns = [*ID, "signal", "group", "bin_left", "bin_right", "count"]
    return explain_empty(pd.DataFrame(rows, columns=columns), "no job generated tokens")


SPEC_FREQUENCIES = [f"{name}{end}" for name in ("freq_s2_tokens", "freq_corrections") for end in ("", "_low", "_high")]
SPEC_COLUMNS = ["benchmark", "large", "small", "source", "variant", "k", "rounds", "acceptance_rate",
                "mean_accepted_length", "s2_passes_per_token", *SPEC_FREQUENCIES, "status"]


def speculative_tables(records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(acceptance: measured and predicted-from-oracle per K; accepted-length histograms).

    Predicted rows come from the oracle (router always) job of the same benchmark and pair.
    Measured rows also carry the two speculative frequencies (System 2's own tokens, corrections).
    Sampled runs (temperature > 0) are left out: the prediction assumes greedy verification (their
    rejection share is in the `sampling` table).
    """
    rows, hist = [], []
    for rec in filter(lambda r: not is_sampled(r), records):
        ids = {k: rec["job"].get(k) for k in ("benchmark", "large", "small")}
        variant = rec["job"]["variant"]
        spec = rec.get("speculative")
        if spec:
            freqs = {k: _num(rec["stats"].get(k)) for k in SPEC_FREQUENCIES}
            status = OK if spec.get("rounds") else f"no rounds: {_missing_reason(rec)}"
            rows.append({**ids, "source": "measured", "variant": variant, **_spec_row(spec), **freqs, "status": status})
            hist += _hist_rows(ids, "measured", variant, spec)
        for pred in rec.get("predicted_speculative") or []:
            status = OK if pred.get("rounds") else "no rounds"
            rows.append({**ids, "source": "predicted", "variant": variant, **_spec_row(pred), "status": status})
            hist += _hist_rows(ids, "predicted", variant, pred)
    why = "no speculative job and no oracle job with router always"
    return (explain_empty(pd.DataFrame(rows, columns=SPEC_COLUMNS), why),
            explain_empty(pd.DataFrame(hist, columns=["benchmark", "large", "small", "source", "variant", "k",
                                                      "accepted", "rounds"]), why))


def _spec_row(spec: dict) -> dict:
    return {k: _num(spec.get(k)) if k != "k" else int(spec["k"]) for k in
            ("k", "rounds", "acceptance_rate", "mean_accepted_length", "s2_passes_per_token")}


def _hist_rows(ids, source, variant, spec) -> list[dict]:
    return [{**ids, "source": source, "variant": variant, "k": int(spec["k"]), "accepted": a, "rounds": c}
            for a, c in enumerate(spec.get("accepted_hist") or [])]


def is_offline_source(rec: dict) -> bool:
    """Oracle runs with router `always` are the offline router sweeps' source."""
    return rec["job"].get("method") == "oracle" and (rec["job"].get("router") or "always") == "always"


def router_offline_table(records) -> pd.DataFrame:
    frames = []
    for rec in records:
        curves = rec.get("router_offline")
        if curves:
            frame = pd.DataFrame(curves)
            for k in ("benchmark", "variant", "large", "small"):
                frame.insert(0, k, rec["job"].get(k))
            frames.append(frame)
    cols = ["benchmark", "variant", "large", "small", "router", "grid", "share_sent", "recall", "threshold"]
    table = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    return explain_empty(table, "no oracle job with router always, or none with 2 or more requests")


def router_offline_missing(records) -> list[dict]:
    """Status rows of the offline sweep: oracle jobs without curves, families without a curve."""
    rows = []
    for rec in filter(is_offline_source, records):
        ids = {k: rec["job"].get(k) for k in ("benchmark", "large", "small")}
        curves = rec.get("router_offline")
        if not curves:
            n = rec["stats"].get("n_samples") or 0
            why = token_status(rec["stats"]) or f"needs 2 or more requests with tokens (has {n})"
            rows += [{**ids, "router": r, "status": f"not computed: {why}"} for r in ROUTER_FAMILIES]
        elif "learned" not in set(curves["router"]):
            rows.append({**ids, "router": "learned",
                         "status": "not trained: the training requests have no intervention, or only interventions"})
    return rows


def router_offline_summary(curves: pd.DataFrame, shares=(0.1, 0.2), missing: list[dict] | None = None) -> pd.DataFrame:
    """Recall of each router at a few shares of tokens sent, per benchmark and pair (+ status rows)."""
    rows = []
    curves = curves.dropna(subset=["router"]) if "router" in curves.columns else curves
    for (benchmark, large, small), group in curves.groupby(["benchmark", "large", "small"], sort=True):
        for share in shares:
            for router, recall in recall_at(group, share).items():
                rows.append({"benchmark": benchmark, "large": large, "small": small, "router": router,
                             "share_sent_max": share, "recall": recall,
                             "status": OK if math.isfinite(recall) else "no intervention among held-out requests"})
    rows += [{**m, "share_sent_max": math.nan, "recall": math.nan} for m in missing or []]
    columns = ["benchmark", "large", "small", "router", "share_sent_max", "recall", "status"]
    return explain_empty(pd.DataFrame(rows, columns=columns), "no oracle job with router always (offline routers need one)")


def router_online_table(jobs: pd.DataFrame) -> pd.DataFrame:
    """`online_tradeoff`, with a status naming a missing accuracy (or that no run has a router)."""
    online = online_tradeoff(jobs) if len(jobs) and "method" in jobs.columns else pd.DataFrame(columns=ONLINE_COLUMNS)
    if online.empty:
        return explain_empty(online, "no run with a router other than always")
    keys = ["benchmark", "variant", "large", "small"]
    reason = jobs[[*keys, "accuracy_status"]] if "accuracy_status" in jobs.columns else jobs[keys].assign(
        accuracy_status="no accuracy")
    online = online.merge(reason.drop_duplicates(keys), on=keys, how="left")
    never = online["router"].eq("never")
    missing = online["accuracy"].isna()
    online["status"] = OK
    online.loc[missing & never, "status"] = "no accuracy: small-alone baseline has none"
    online.loc[missing & ~never, "status"] = "no accuracy: " + online.loc[missing & ~never, "accuracy_status"].fillna("?")
    return online.drop(columns="accuracy_status")
