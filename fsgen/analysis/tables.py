"""Aggregate tables built from the per-job `stats.json` records (see `fsgen.analysis.analyze_job`)."""

from __future__ import annotations

import json
import math

import pandas as pd

from fsgen.analysis.routing import online_tradeoff, recall_at
from fsgen.analysis.stats import pair_mask

PAIR = ["large", "small"]
ID = ["benchmark", "method", "kind", "router", "large", "small"]


def load_records(paths) -> list[dict]:
    records = []
    for path in paths:
        with open(path) as f:
            record = json.load(f)
        if "job" not in record or "stats" not in record:
            raise ValueError(f"{path}: not a stats.json record (needs 'job' and 'stats')")
        records.append(record)
    return records


def _num(value) -> float:
    return math.nan if value is None else float(value)


def jobs_table(records: list[dict]) -> pd.DataFrame:
    """One row per job: identity, collaboration statistics, accuracy, speculative, AUROC."""
    rows = []
    for rec in records:
        row = dict(rec["job"])
        row.update({k: (math.nan if v is None else v) for k, v in rec["stats"].items()})
        acc = rec.get("accuracy", {})
        row.update(accuracy=_num(acc.get("method")), small_accuracy=_num(acc.get("small")),
                   large_accuracy=_num(acc.get("large")), accuracy_metric=acc.get("metric"))
        spec = rec.get("speculative") or {}
        row.update(spec_acceptance_rate=_num(spec.get("acceptance_rate")),
                   spec_mean_accepted_length=_num(spec.get("mean_accepted_length")),
                   spec_s2_passes_per_token=_num(spec.get("s2_passes_per_token")))
        au = rec.get("auroc") or {}
        row.update({f"auroc_{s}": _num(au.get(s)) for s in ("top1_prob", "margin", "entropy")})
        rows.append(row)
    if not rows:  # keep the columns later steps select on
        return pd.DataFrame(columns=[*ID, "large_params", "small_params", "freq_pooled", "freq_pooled_low",
                                     "freq_pooled_high", "s2_call_rate", "accuracy", "small_accuracy"])
    df = pd.DataFrame(rows)
    if len(df):
        df["ratio"] = df["large_params"].astype(float) / df["small_params"].astype(float)
        df = df.sort_values(["benchmark", "method", "small_params", "large_params"], ignore_index=True)
    return df


def wide_table(jobs: pd.DataFrame, value: str = "freq_pooled") -> pd.DataFrame:
    """Paper-shaped: one block per method, rows = pairs (large, small), columns = benchmarks."""
    jobs = jobs[pair_mask(jobs)] if len(jobs) else jobs
    if jobs.empty:
        return pd.DataFrame(columns=["method", *PAIR])
    wide = jobs.pivot_table(index=["method", "large", "small", "large_params", "small_params"],
                            columns="benchmark", values=value, aggfunc="first").reset_index()
    wide.columns.name = None
    wide = wide.sort_values(["method", "small_params", "large_params"], ignore_index=True)
    return wide.drop(columns=["large_params", "small_params"])


def _model_key(name) -> str:
    """Compare model names by their last path component, case-insensitively."""
    return str(name).rstrip("/").split("/")[-1].lower()


def reference_comparison(jobs: pd.DataFrame, reference: pd.DataFrame, benchmark_map: dict | None = None) -> pd.DataFrame:
    """Our pooled frequency beside the published one, per (method, benchmark, pair), outer join.

    Our runs join when their kind names the reference method and their router is `always`;
    model names join on their last path component (case-insensitive); `benchmark_map` maps our
    benchmark names to the reference's. difference = ours − paper.
    """
    benchmark_map = benchmark_map or {}
    ref = reference.assign(_l=reference["large_model"].map(_model_key), _s=reference["small_model"].map(_model_key))
    ref = ref.rename(columns={"collaboration_frequency": "freq_paper"})
    ours = jobs[(jobs["router"].fillna("always") == "always") & jobs["kind"].isin(reference["method"].unique())]
    ours = pd.DataFrame({
        "method": ours["kind"], "benchmark": ours["benchmark"].map(lambda b: benchmark_map.get(b, b)),
        "our_method": ours["method"], "our_large": ours["large"], "our_small": ours["small"],
        "_l": ours["large"].map(_model_key), "_s": ours["small"].map(_model_key),
        "freq_ours": ours["freq_pooled"], "freq_ours_low": ours["freq_pooled_low"],
        "freq_ours_high": ours["freq_pooled_high"],
    })
    merged = ours.merge(ref, on=["method", "benchmark", "_l", "_s"], how="outer")
    merged["difference"] = merged["freq_ours"] - merged["freq_paper"]
    merged["matched"] = merged["freq_ours"].notna() & merged["freq_paper"].notna()
    merged["large_model"] = merged["large_model"].fillna(merged["our_large"])
    merged["small_model"] = merged["small_model"].fillna(merged["our_small"])
    cols = ["method", "benchmark", "large_model", "small_model", "large_params_b", "small_params_b",
            "our_method", "freq_ours", "freq_ours_low", "freq_ours_high", "freq_paper", "difference", "matched"]
    return merged[cols].sort_values(["method", "benchmark", "small_params_b", "large_params_b"], ignore_index=True)


def _ids(rec: dict) -> dict:
    return {k: rec["job"].get(k) for k in ID}


def auroc_table(records) -> pd.DataFrame:
    rows = []
    for rec in records:
        au = rec.get("auroc")
        if au:
            for signal in ("top1_prob", "margin", "entropy"):
                rows.append({**_ids(rec), "signal": signal, "auroc": _num(au.get(signal)),
                             "n_intervened": au.get("n_intervened"), "n_kept": au.get("n_kept")})
    return pd.DataFrame(rows, columns=[*ID, "signal", "auroc", "n_intervened", "n_kept"])


def positions_table(records) -> pd.DataFrame:
    rows = []
    for rec in records:
        pos = rec.get("positions")
        if pos:
            n = len(pos["share"])
            for i in range(n):
                rows.append({**_ids(rec), "bin": i, "bin_label": f"{100 * i // n}-{100 * (i + 1) // n}%",
                             "share": _num(pos["share"][i]), "rate": _num(pos["rate"][i]), "tokens": pos["tokens"][i]})
    return pd.DataFrame(rows, columns=[*ID, "bin", "bin_label", "share", "rate", "tokens"])


def histograms_table(records) -> pd.DataFrame:
    rows = []
    for rec in records:
        for signal, h in (rec.get("histograms") or {}).items():
            edges = h["edges"]
            for group in ("intervened", "kept"):
                for i, count in enumerate(h[group]):
                    rows.append({**_ids(rec), "signal": signal, "group": group, "bin_left": edges[i],
                                 "bin_right": edges[i + 1], "count": count})
    return pd.DataFrame(rows, columns=[*ID, "signal", "group", "bin_left", "bin_right", "count"])


def speculative_tables(records) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(acceptance: measured and predicted-from-oracle per K; accepted-length histograms).

    Predicted rows come from the oracle (router always) job of the same benchmark and pair.
    """
    rows, hist = [], []
    for rec in records:
        ids = {k: rec["job"].get(k) for k in ("benchmark", "large", "small")}
        spec = rec.get("speculative")
        if spec:
            rows.append({**ids, "source": "measured", "method": rec["job"]["method"], **_spec_row(spec)})
            hist += _hist_rows(ids, "measured", rec["job"]["method"], spec)
        for pred in rec.get("predicted_speculative") or []:
            rows.append({**ids, "source": "predicted", "method": rec["job"]["method"], **_spec_row(pred)})
            hist += _hist_rows(ids, "predicted", rec["job"]["method"], pred)
    cols = ["benchmark", "large", "small", "source", "method", "k", "rounds", "acceptance_rate",
            "mean_accepted_length", "s2_passes_per_token"]
    return pd.DataFrame(rows, columns=cols), pd.DataFrame(
        hist, columns=["benchmark", "large", "small", "source", "method", "k", "accepted", "rounds"])


def _spec_row(spec: dict) -> dict:
    return {k: _num(spec.get(k)) if k != "k" else int(spec["k"]) for k in
            ("k", "rounds", "acceptance_rate", "mean_accepted_length", "s2_passes_per_token")}


def _hist_rows(ids, source, method, spec) -> list[dict]:
    return [{**ids, "source": source, "method": method, "k": int(spec["k"]), "accepted": a, "rounds": c}
            for a, c in enumerate(spec.get("accepted_hist") or [])]


def router_offline_table(records) -> pd.DataFrame:
    frames = []
    for rec in records:
        curves = rec.get("router_offline")
        if curves:
            frame = pd.DataFrame(curves)
            for k in ("benchmark", "method", "large", "small"):
                frame.insert(0, k, rec["job"].get(k))
            frames.append(frame)
    cols = ["benchmark", "method", "large", "small", "router", "grid", "share_sent", "recall", "threshold"]
    if not frames:
        return pd.DataFrame(columns=cols)
    return pd.concat(frames, ignore_index=True)[cols]


def router_offline_summary(curves: pd.DataFrame, shares=(0.1, 0.2)) -> pd.DataFrame:
    """Recall of each router at a few shares of tokens sent, per benchmark and pair."""
    rows = []
    for (benchmark, large, small), group in curves.groupby(["benchmark", "large", "small"], sort=True):
        for share in shares:
            for router, recall in recall_at(group, share).items():
                rows.append({"benchmark": benchmark, "large": large, "small": small, "router": router,
                             "share_sent_max": share, "recall": recall})
    return pd.DataFrame(rows, columns=["benchmark", "large", "small", "router", "share_sent_max", "recall"])


def router_online_table(jobs: pd.DataFrame) -> pd.DataFrame:
    return online_tradeoff(jobs)


def build_tables(records: list[dict], reference: pd.DataFrame | None = None,
                 benchmark_map: dict | None = None) -> dict[str, pd.DataFrame]:
    """Every aggregate table by name (the names are the CSV stems under results/tables/)."""
    jobs = jobs_table(records)
    spec, accepted = speculative_tables(records)
    offline = router_offline_table(records)
    tables = {
        "jobs": jobs,
        "collaboration_wide": wide_table(jobs, "freq_pooled"),
        "accuracy_wide": wide_table(jobs, "accuracy"),
        "auroc": auroc_table(records),
        "positions": positions_table(records),
        "histograms": histograms_table(records),
        "speculative": spec,
        "accepted_lengths": accepted,
        "router_offline": offline,
        "router_offline_summary": router_offline_summary(offline),
        "router_online": router_online_table(jobs) if len(jobs) else pd.DataFrame(),
    }
    if reference is not None:
        tables["paper_comparison"] = reference_comparison(jobs, reference, benchmark_map)
    return tables


def read_tables(paths: dict) -> dict[str, pd.DataFrame]:
    """{name: DataFrame} from {name: CSV path} (an empty file reads as an empty table)."""
    out = {}
    for name, path in paths.items():
        try:
            out[name] = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            out[name] = pd.DataFrame()
    return out
