"""Which law do the collaboration frequencies follow, and how sure are we?

Four forms of the frequency f of a pair (r = large/small parameter ratio, N = small model's
parameters in billions, natural logs):
  power            f = b − a·r^(−α)         (FS-GEN; a, α, b ≥ 0.05, as the authors fitted it)
  log_ratio        f = c + d·ln r           (what the power law becomes when α sits at its bound)
  log_small        f = c + d·ln N           (the small model's size alone)
  log_ratio_small  f = c + d·ln r + e·ln N  (both)
Compared by AICc (Gaussian errors; k counts the noise variance too, so AICc needs n > k + 1)
and by the leave-one-pair-out prediction error (RMSE of each pair predicted from a fit to the
others). Uncertainty: percentile bootstrap intervals of every parameter, by resampling pairs
(the only choice for a published table: one number per pair) or by resampling the requests of
each job and recomputing its pooled frequency (our runs). Every refit is vectorised over the
replicates (`fit_power_law_profile`; batched normal equations for the linear forms).
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass

import numpy as np
import pandas as pd

from fsgen.analysis.scaling import (ALPHA_GRID, LAW_PARAMETERS, bound_status, fit_power_law_profile, law_at_limits,
                                   parameters_at_bound, percentile_interval, power_law)


@dataclass(frozen=True)
class Form:
    name: str
    formula: str
    parameters: tuple[str, ...]
    columns: tuple[str, ...] = ()  # predictors of a linear form, after the intercept

    @property
    def k(self) -> int:
        """Fitted parameters including the noise variance (the k of AICc)."""
        return len(self.parameters) + 1


FORMS = {
    "power": Form("power", "b − a·r^(−α)", LAW_PARAMETERS),
    "log_ratio": Form("log_ratio", "c + d·ln r", ("c", "d"), ("ln_ratio",)),
    "log_small": Form("log_small", "c + d·ln N_small", ("c", "d"), ("ln_small",)),
    "log_ratio_small": Form("log_ratio_small", "c + d·ln r + e·ln N_small", ("c", "d", "e"), ("ln_ratio", "ln_small")),
}
ALL_PARAMETERS = ("a", "alpha", "b", "c", "d", "e")
BAND_FORMS = {"power": "ratio", "log_ratio": "ratio", "log_small": "small_params"}  # form -> x axis of its band


# ------------------------------------------------------------------ fitting many data sets at once


def _predictors(ratio, small_params) -> dict[str, np.ndarray]:
    return {"ln_ratio": np.log(ratio), "ln_small": np.log(np.asarray(small_params, float) / 1e9)}


def design(form: Form, ratio, small_params) -> np.ndarray:
    """[..., n, k] design matrix of a linear form (intercept first)."""
    columns = _predictors(np.asarray(ratio, float), small_params)
    return np.stack([np.ones_like(columns["ln_ratio"]), *(columns[c] for c in form.columns)], axis=-1)


def predict(form: Form, params: np.ndarray, ratio, small_params) -> np.ndarray:
    """Values of `form` with params [B, p] at points ratio, small_params [m] -> [B, m]."""
    params = np.atleast_2d(params)
    if form.name == "power":
        return power_law(np.asarray(ratio, float)[None, :], *(params[:, i:i + 1] for i in range(3)))
    return np.einsum("mk,bk->bm", design(form, ratio, small_params), params)


def _distinct(values: np.ndarray) -> np.ndarray:
    """Number of distinct values per row of [B, n]."""
    return (np.diff(np.sort(values, axis=-1), axis=-1) != 0).sum(-1) + 1


def fit_batch(form: Form, ratio, small_params, freq) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fits of `form` to many data sets: ratio, small_params, freq [B, n] (or [n]
    for predictors shared by all). Returns params [B, p] and residual sums of squares [B];
    NaN where a data set does not identify the form (fewer distinct ratios than 3, collinear
    predictors)."""
    freq = np.atleast_2d(np.asarray(freq, float))
    shared_ratio = np.ndim(ratio) == 1  # the profile solver has a faster path for shared ratios
    ratio = np.broadcast_to(np.atleast_2d(np.asarray(ratio, float)), freq.shape)
    small = np.broadcast_to(np.atleast_2d(np.asarray(small_params, float)), freq.shape)
    if form.name == "power":
        params, sse = fit_power_law_profile(ratio[0] if shared_ratio else ratio, freq)
        unidentified = _distinct(ratio) < len(form.parameters)
    else:
        x = design(form, ratio, small)  # [B, n, p]
        unidentified = np.linalg.matrix_rank(x) < x.shape[-1]
        xtx = np.einsum("bni,bnj->bij", x, x)
        xtx[unidentified] = np.eye(x.shape[-1])  # placeholder, result replaced by NaN below
        params = np.linalg.solve(xtx, np.einsum("bni,bn->bi", x, freq)[..., None])[..., 0]
        sse = ((freq - np.einsum("bni,bi->bn", x, params)) ** 2).sum(-1)
    params = np.where(unidentified[:, None], np.nan, params)
    return params, np.where(unidentified, np.nan, sse)


def aicc(sse: float, n: int, k: int) -> float:
    """AICc of a least-squares fit with Gaussian errors: n·ln(SSE/n) + 2k + 2k(k+1)/(n−k−1);
    NaN when n ≤ k + 1 (undefined) or SSE = 0 (an exact fit has no likelihood to compare)."""
    if n <= k + 1 or not (sse > 0):
        return math.nan
    return n * math.log(sse / n) + 2 * k + 2 * k * (k + 1) / (n - k - 1)


def loo_rmse(form: Form, ratio, small_params, freq) -> float:
    """Root mean squared error of each point predicted from a fit to the others (NaN when some
    fold does not identify the form)."""
    ratio, small, freq = (np.asarray(v, float) for v in (ratio, small_params, freq))
    n = len(freq)
    if n - 1 < len(form.parameters):
        return math.nan
    keep = ~np.eye(n, dtype=bool)  # fold i leaves out point i
    folds = [v[None, :].repeat(n, 0)[keep].reshape(n, n - 1) for v in (ratio, small, freq)]
    params, _ = fit_batch(form, *folds)  # [n, p]
    errors = np.array([predict(form, params[i], ratio[i:i + 1], small[i:i + 1])[0, 0] for i in range(n)]) - freq
    return float(np.sqrt(np.mean(errors ** 2))) if np.isfinite(errors).all() else math.nan


# ------------------------------------------------------------------ model comparison


def compare_forms(ratio, small_params, freq) -> list[dict]:
    """One row per form: parameters, SSE, AICc, LOO RMSE and a status saying what is undefined."""
    ratio, small, freq = (np.asarray(v, float) for v in (ratio, small_params, freq))
    n = len(freq)
    rows = []
    for form in FORMS.values():
        params, sse = (v[0] for v in fit_batch(form, ratio, small, freq))
        named = dict(zip(form.parameters, params.tolist()))
        notes = []
        if not np.isfinite(sse):
            notes.append("not identified: too few distinct ratios" if form.name == "power"
                         else "not identified: collinear predictors (one small or one large model?)")
        if form.name == "power" and (bounded := parameters_at_bound(named)):
            notes.append(bound_status(bounded))
        if form.name == "power" and named["alpha"] >= ALPHA_GRID[-1] * (1 - 1e-6):
            notes.append(f"not identified: alpha at the solver's upper end {ALPHA_GRID[-1]:g} (the law is flat)")
        score = aicc(float(sse), n, form.k) if np.isfinite(sse) else math.nan
        if n <= form.k + 1:
            notes.append(f"AICc undefined: n = {n} ≤ k + 1 = {form.k + 1}")
        loo = loo_rmse(form, ratio, small, freq) if np.isfinite(sse) else math.nan
        if np.isfinite(sse) and not np.isfinite(loo):
            notes.append("LOO undefined: a fold does not identify the form")
        rows.append({"form": form.name, "formula": form.formula, "n_pairs": n, "k": form.k, "sse": float(sse),
                     "aicc": score, "loo_rmse": loo, **{p: named.get(p, math.nan) for p in ALL_PARAMETERS},
                     "at_bound": ",".join(parameters_at_bound(named)) if form.name == "power" else "",
                     "status": "; ".join(notes) or "ok"})
    _add_rankings(rows)
    return rows


def _add_rankings(rows: list[dict]) -> None:
    """ΔAICc, Akaike weights and the best form by each criterion, among forms where defined."""
    scores = np.array([r["aicc"] for r in rows], float)
    loo = np.array([r["loo_rmse"] for r in rows], float)
    finite = np.isfinite(scores)
    delta = scores - (scores[finite].min() if finite.any() else math.nan)
    weights = np.where(finite, np.exp(-0.5 * np.nan_to_num(delta, nan=np.inf)), 0.0)
    weights = weights / weights.sum() if finite.any() else np.full(len(rows), math.nan)
    for i, row in enumerate(rows):
        row.update(delta_aicc=float(delta[i]), aicc_weight=float(weights[i]) if finite[i] else math.nan,
                   best_aicc=bool(finite.any() and finite[i] and delta[i] == 0),
                   best_loo=bool(np.isfinite(loo).any() and loo[i] == np.nanmin(loo)))


def _groups(points: pd.DataFrame, source: str):
    need = ["variant", "benchmark", "large", "small", "large_params", "small_params", "freq"]
    missing = [c for c in need if c not in points.columns]
    if missing:
        raise KeyError(f"scaling-law points ({source}) lack columns {missing}")
    points = points.dropna(subset=["large_params", "small_params", "freq"])
    points = points[points["small_params"] > 0]
    for (variant, benchmark), group in points.groupby(["variant", "benchmark"], sort=True):
        yield variant, benchmark, group.reset_index(drop=True)


def _ratio(group: pd.DataFrame) -> np.ndarray:
    return group["large_params"].to_numpy(float) / group["small_params"].to_numpy(float)


FORMS_COLUMNS = ["source", "variant", "benchmark", "form", "formula", "n_pairs", "k", "sse", "aicc", "delta_aicc",
                 "aicc_weight", "loo_rmse", "best_aicc", "best_loo", *ALL_PARAMETERS, "at_bound", "status"]


def forms_table(points: pd.DataFrame, source: str) -> pd.DataFrame:
    """Every form fitted to every variant × benchmark of `points` (columns as `fit_table`'s input)."""
    rows = []
    for variant, benchmark, group in _groups(points, source):
        for row in compare_forms(_ratio(group), group["small_params"], group["freq"]):
            rows.append({"source": source, "variant": variant, "benchmark": benchmark, **row})
    return pd.DataFrame(rows, columns=FORMS_COLUMNS)


# ------------------------------------------------------------------ bootstrap


def group_rng(seed: int, *key) -> np.random.Generator:
    """A generator per (seed, group): a group's replicates do not change when others are added."""
    return np.random.default_rng([seed, zlib.crc32("/".join(map(str, key)).encode())])


def pair_replicates(ratio, small_params, freq, n_boot: int, rng) -> tuple[np.ndarray, ...]:
    """Resampled pairs: ratio, small_params, freq [B, n] (the same pair indices for all three)."""
    ratio, small, freq = (np.asarray(v, float) for v in (ratio, small_params, freq))
    index = rng.integers(0, len(freq), size=(n_boot, len(freq)))  # [B, n]
    return ratio[index], small[index], freq[index]


def request_replicates(jobs: list[tuple[np.ndarray, np.ndarray]], n_boot: int, rng) -> np.ndarray:
    """Pooled frequency of each job with its requests resampled: [B, n_jobs].

    jobs: per job (interventions [R], tokens [R]) per request; each job is resampled on its own.
    """
    freq = np.empty((n_boot, len(jobs)))
    for j, (interventions, tokens) in enumerate(jobs):
        index = rng.integers(0, len(tokens), size=(n_boot, len(tokens)))  # [B, R]
        freq[:, j] = interventions[index].sum(1) / tokens[index].sum(1)
    return freq


def request_points(requests: pd.DataFrame) -> tuple[pd.DataFrame, list]:
    """Per-request counts -> one point per job (pooled frequency; `job` indexes the arrays) and
    per job its (interventions [R], tokens [R]).

    requests columns: variant, benchmark, large, small, large_params, small_params, tokens,
    interventions (one row per request of a pair job; requests without tokens are dropped)."""
    need = ["variant", "benchmark", "large", "small", "large_params", "small_params", "tokens", "interventions"]
    missing = [c for c in need if c not in requests.columns]
    if missing:
        raise KeyError(f"per-request counts lack columns {missing}")
    requests = requests[requests["tokens"] > 0]
    keys = need[:6]
    points, arrays = [], []
    for key, job in requests.groupby(keys, sort=True):
        counts = (job["interventions"].to_numpy(float), job["tokens"].to_numpy(float))
        points.append({**dict(zip(keys, key)), "freq": counts[0].sum() / counts[1].sum(), "job": len(arrays)})
        arrays.append(counts)
    return pd.DataFrame(points, columns=[*keys, "freq", "job"]), arrays


def _interval_rows(form: Form, estimate: np.ndarray, reps: np.ndarray, level: float) -> list[dict]:
    """One row per parameter. share_at_bound (power law): share of the valid replicates with the
    parameter at its lower bound (α also: at the solver's upper end) — an interval made of such
    replicates shows the bound, not precision."""
    low, high = percentile_interval(reps, level, axis=0)
    valid = np.isfinite(reps).all(1)
    at_limit = law_at_limits(reps[valid]).mean(0) if form.name == "power" and valid.any() else \
        np.full(reps.shape[1], np.nan)
    return [{"form": form.name, "parameter": p, "estimate": float(estimate[i]), "low": float(low[i]),
             "high": float(high[i]), "level": level, "n_boot": len(reps), "n_valid": int(valid.sum()),
             "share_at_bound": float(at_limit[i])} for i, p in enumerate(form.parameters)]


def _band_rows(form: Form, estimate, reps, group: pd.DataFrame, level: float, grid_size: int) -> list[dict]:
    axis = BAND_FORMS[form.name]
    values = _ratio(group) if axis == "ratio" else group["small_params"].to_numpy(float)
    grid = np.geomspace(values.min(), values.max(), grid_size)
    ratio, small = (grid, np.full_like(grid, np.nan)) if axis == "ratio" else (np.full_like(grid, np.nan), grid)
    fit = predict(form, estimate, ratio, small)[0]
    low, high = percentile_interval(predict(form, reps, ratio, small), level, axis=0)
    return [{"form": form.name, "ratio": ratio[i], "small_params": small[i], "fit": fit[i], "low": low[i],
             "high": high[i]} for i in range(grid_size)]


def bootstrap_group(ratio, small_params, freq, replicates, level=0.95, grid_size=50, group=None):
    """Intervals (and bands when `group` is given) of every form from replicate data sets.

    replicates: (ratio, small_params, freq) each [B, n] or [n] (fixed predictors)."""
    intervals, bands = [], []
    for form in FORMS.values():
        estimate = fit_batch(form, ratio, small_params, freq)[0][0]
        if not np.isfinite(estimate).all():
            continue
        reps = fit_batch(form, *replicates)[0]  # [B, p]
        intervals += _interval_rows(form, estimate, reps, level)
        if group is not None and form.name in BAND_FORMS:
            bands += _band_rows(form, estimate, reps, group, level, grid_size)
    return intervals, bands


def bootstrap_tables(points: pd.DataFrame, source: str, requests: pd.DataFrame | None = None, n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95, grid_size: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(intervals, bands) of every form per variant × benchmark, scheme "pairs" from `points` and,
    with per-request counts, scheme "requests" (requests resampled within each job)."""
    data = [("pairs", variant, bench, group) for variant, bench, group in _groups(points, source)]
    if requests is not None:
        job_points, arrays = request_points(requests)
        for variant, bench, group in _groups(job_points, source):
            data.append(("requests", variant, bench, group))
    intervals, bands = [], []
    for scheme, variant, bench, group in data:
        ratio, small, freq = _ratio(group), group["small_params"].to_numpy(float), group["freq"].to_numpy(float)
        rng = group_rng(seed, source, scheme, variant, bench)
        if scheme == "pairs":
            reps = pair_replicates(ratio, small, freq, n_boot, rng)
        else:
            reps = (ratio, small, request_replicates([arrays[j] for j in group["job"]], n_boot, rng))
        ident = {"source": source, "variant": variant, "benchmark": bench, "scheme": scheme}
        rows, band = bootstrap_group(ratio, small, freq, reps, level, grid_size, group)
        intervals += [{**ident, **r} for r in rows]
        bands += [{**ident, **r} for r in band]
    return (pd.DataFrame(intervals, columns=BOOTSTRAP_COLUMNS), pd.DataFrame(bands, columns=BAND_COLUMNS))


BOOTSTRAP_COLUMNS = ["source", "variant", "benchmark", "scheme", "form", "parameter", "estimate", "low", "high",
                     "level", "n_boot", "n_valid", "share_at_bound"]
BAND_COLUMNS = ["source", "variant", "benchmark", "scheme", "form", "ratio", "small_params", "fit", "low", "high"]


# ------------------------------------------------------------------ what the data support

AICC_CLEAR = 2.0  # ΔAICc below 2: the data do not separate the forms (Burnham & Anderson 2002)


def _describe(row) -> str:
    text = row["formula"]
    if row["form"] == "power" and "alpha" in str(row["at_bound"]).split(","):
        text += " with α at its 0.05 bound (exponent not identified: effectively c + d·ln r)"
    return text


def form_sentence(rows: pd.DataFrame) -> str:
    """One sentence: which form one (source, variant, benchmark)'s frequencies support, by AICc and
    leave-one-pair-out error, saying what is undefined at this number of pairs."""
    first = rows.iloc[0]
    label = f"{first['source']} {first['variant']}/{first['benchmark']} ({int(first['n_pairs'])} pairs)"
    scored = rows[np.isfinite(rows["aicc"].astype(float))].sort_values("aicc")
    loo = rows[np.isfinite(rows["loo_rmse"].astype(float))].sort_values("loo_rmse")
    if scored.empty and loo.empty:
        return f"{label}: too few pairs to compare the forms (AICc needs more than k + 1 points, k counting σ²)."
    if scored.empty:
        best = loo.iloc[0]
        return (f"{label}: AICc is undefined at this n; the leave-one-pair-out error is lowest for "
                f"{_describe(best)} (RMSE {best['loo_rmse']:.3g}) — weak evidence at this number of pairs.")
    best = scored.iloc[0]
    if len(scored) == 1:
        claim = f"only {_describe(best)} has an AICc"
    elif (gap := scored.iloc[1]["aicc"] - best["aicc"]) >= AICC_CLEAR:
        claim = f"the data support {_describe(best)} (AICc lower by {gap:.1f} than {scored.iloc[1]['formula']})"
    else:
        claim = (f"the data do not separate {_describe(best)} from {_describe(scored.iloc[1])} "
                 f"(ΔAICc {gap:.1f} < {AICC_CLEAR:g})")
    if not loo.empty:
        top = loo.iloc[0]
        own = rows[rows["form"] == best["form"]].iloc[0]["loo_rmse"]
        claim += ("; leave-one-pair-out error agrees" if top["form"] == best["form"]
                  else f"; leave-one-pair-out error favours {_describe(top)} instead") + \
            f" (RMSE {top['loo_rmse']:.3g}" + ("" if top["form"] == best["form"] else f" vs {own:.3g}") + ")"
    power = scored[scored["form"] == "power"]
    if len(power) and best["form"] != "power":  # where the paper's law stands
        claim += f"; {_describe(power.iloc[0])} is ΔAICc {power.iloc[0]['aicc'] - best['aicc']:.1f} behind"
    left_out = rows[~rows["form"].isin(scored["form"])]["formula"].tolist()
    if left_out:
        claim += f"; not compared: {', '.join(left_out)} (AICc undefined or not identified)"
    return f"{label}: {claim}."


def form_verdicts(forms: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, variant, benchmark): best form by AICc and by LOO error, and the sentence."""
    rows = []
    for (source, variant, bench), group in forms.groupby(["source", "variant", "benchmark"], sort=True):
        best = group[group["best_aicc"]]["form"].tolist()
        best_loo = group[group["best_loo"]]["form"].tolist()
        rows.append({"source": source, "variant": variant, "benchmark": bench, "n_pairs": int(group["n_pairs"].iloc[0]),
                     "best_aicc": best[0] if best else "", "best_loo": best_loo[0] if best_loo else "",
                     "sentence": form_sentence(group)})
    return pd.DataFrame(rows, columns=["source", "variant", "benchmark", "n_pairs", "best_aicc", "best_loo", "sentence"])


def uncertainty_tables(jobs: pd.DataFrame, reference: pd.DataFrame | None = None,
                       requests: pd.DataFrame | None = None, n_boot: int = 1000, seed: int = 0,
                       level: float = 0.95) -> dict[str, pd.DataFrame]:
    """Forms, bootstrap intervals, bands and verdicts for our runs ("ours": pairs scheme, and the
    requests scheme when per-request counts are given) and the published table ("paper": pairs).

    Returns {"scaling_forms", "scaling_bootstrap", "scaling_bands", "scaling_verdicts"}."""
    from fsgen.analysis.scaling import jobs_points, reference_points

    sources = [("ours", jobs_points(jobs), requests)]
    if reference is not None:
        sources.append(("paper", reference_points(reference), None))
    forms, intervals, bands = [], [], []
    for source, points, per_request in sources:
        forms.append(forms_table(points, source))
        boot, band = bootstrap_tables(points, source, per_request, n_boot=n_boot, seed=seed, level=level)
        intervals.append(boot)
        bands.append(band)
    forms = pd.concat(forms, ignore_index=True)
    return {"scaling_forms": forms, "scaling_bootstrap": pd.concat(intervals, ignore_index=True),
            "scaling_bands": pd.concat(bands, ignore_index=True), "scaling_verdicts": form_verdicts(forms)}
