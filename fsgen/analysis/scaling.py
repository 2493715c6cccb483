"""The collaboration scaling law and its alternative.

Law (FS-GEN): f(r) = b − a·r^(−α), r = large/small parameter ratio; fitted with scipy
`curve_fit`, p0 = (1, 1, 1), every parameter bounded below by 0.05 (as the authors did).
Alternative: f = c + d·log(N_small) (ordinary least squares; natural log, N in billions), i.e. the
frequency depends on the small model's size alone.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
from scipy.optimize import curve_fit

MIN_PAIRS = 3  # fewer points than the law's 3 parameters cannot be fitted
LOWER_BOUND = 0.05  # the authors' lower bound on a, α and b
P0 = (1.0, 1.0, 1.0)


def power_law(r, a, alpha, b):
    """f(r) = b − a·r^(−α)."""
    return b - a * np.power(r, -alpha)


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    """1 − SS_res/SS_tot (NaN when y is constant)."""
    y, y_hat = np.asarray(y, float), np.asarray(y_hat, float)
    ss_tot = float(((y - y.mean()) ** 2).sum())
    if ss_tot == 0:
        return math.nan
    return 1.0 - float(((y - y_hat) ** 2).sum()) / ss_tot


@dataclass
class ScalingFit:
    n_pairs: int
    a: float = math.nan
    alpha: float = math.nan
    b: float = math.nan
    r2: float = math.nan
    alt_c: float = math.nan  # f = alt_c + alt_d·ln(N_small / 1e9)
    alt_d: float = math.nan
    alt_r2: float = math.nan
    status: str = "ok"  # "ok", or why a fit was not made
    residuals: list[float] = field(default_factory=list)  # observed − law, in input order
    alt_residuals: list[float] = field(default_factory=list)

    def row(self) -> dict:
        d = asdict(self)
        d.pop("residuals")
        d.pop("alt_residuals")
        return d


def fit_power_law(ratio, freq) -> tuple[np.ndarray, np.ndarray]:
    """(a, α, b) and the fitted values; raises RuntimeError when curve_fit does not converge."""
    ratio, freq = np.asarray(ratio, float), np.asarray(freq, float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # OptimizeWarning for covariance with n = 3 points
        params, _ = curve_fit(power_law, ratio, freq, p0=P0, bounds=(LOWER_BOUND, np.inf), maxfev=20000)
    return params, power_law(ratio, *params)


def fit_small_size(small_params, freq) -> tuple[float, float, np.ndarray]:
    """(c, d, fitted) of f = c + d·ln(N_small in billions); NaNs when all small sizes are equal."""
    x = np.log(np.asarray(small_params, float) / 1e9)
    freq = np.asarray(freq, float)
    if np.ptp(x) == 0:
        return math.nan, math.nan, np.full_like(freq, math.nan)
    d, c = np.polyfit(x, freq, 1)
    return float(c), float(d), c + d * x


def fit_scaling(large_params, small_params, freq) -> ScalingFit:
    """Fit both models to one method × benchmark's points (parameter counts in units of 1)."""
    large = np.asarray(large_params, float)
    small = np.asarray(small_params, float)
    freq = np.asarray(freq, float)
    keep = np.isfinite(large) & np.isfinite(small) & np.isfinite(freq) & (small > 0)
    large, small, freq = large[keep], small[keep], freq[keep]
    n = len(freq)
    fit = ScalingFit(n_pairs=n)
    if n < MIN_PAIRS:
        fit.status = f"not fitted: {n} pair(s) < {MIN_PAIRS}"
        return fit
    ratio = large / small
    try:
        (fit.a, fit.alpha, fit.b), fitted = fit_power_law(ratio, freq)
        fit.r2 = r_squared(freq, fitted)
        fit.residuals = (freq - fitted).tolist()
    except (RuntimeError, ValueError) as err:
        fit.status = f"law not fitted: {err}"
    fit.alt_c, fit.alt_d, alt_fitted = fit_small_size(small, freq)
    if np.isfinite(fit.alt_c):
        fit.alt_r2 = r_squared(freq, alt_fitted)
        fit.alt_residuals = (freq - alt_fitted).tolist()
    elif fit.status == "ok":
        fit.status = "alternative not fitted: one small-model size"
    return fit


def fit_table(points: pd.DataFrame, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fit every method × benchmark of `points`.

    points columns: method, benchmark, large, small, large_params, small_params, freq.
    Returns (fits: one row per method × benchmark, residuals: one row per point).
    """
    need = ["method", "benchmark", "large", "small", "large_params", "small_params", "freq"]
    missing = [c for c in need if c not in points.columns]
    if missing:
        raise KeyError(f"scaling-law points ({source}) lack columns {missing}")
    fits, residuals = [], []
    for (method, benchmark), group in points.groupby(["method", "benchmark"], sort=True):
        group = group.dropna(subset=["large_params", "small_params", "freq"])
        fit = fit_scaling(group["large_params"], group["small_params"], group["freq"])
        fits.append({"source": source, "method": method, "benchmark": benchmark, **fit.row()})
        ratio = group["large_params"].to_numpy(float) / group["small_params"].to_numpy(float)
        for i, (_, point) in enumerate(group.iterrows()):
            residuals.append({
                "source": source, "method": method, "benchmark": benchmark,
                "large": point["large"], "small": point["small"], "ratio": ratio[i],
                "small_params": point["small_params"], "freq": point["freq"],
                "residual": fit.residuals[i] if fit.residuals else math.nan,
                "alt_residual": fit.alt_residuals[i] if fit.alt_residuals else math.nan,
            })
    columns = ["source", "method", "benchmark", *ScalingFit(0).row().keys()]
    return pd.DataFrame(fits, columns=columns), pd.DataFrame(residuals)


def reference_points(reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's CSV (large_params_b, small_params_b in billions) as scaling-law points."""
    need = ["method", "benchmark", "large_model", "small_model", "large_params_b", "small_params_b",
            "collaboration_frequency"]
    missing = [c for c in need if c not in reference.columns]
    if missing:
        raise KeyError(f"reference CSV lacks columns {missing} (expected {need})")
    return pd.DataFrame({
        "method": reference["method"], "benchmark": reference["benchmark"],
        "large": reference["large_model"], "small": reference["small_model"],
        "large_params": reference["large_params_b"].astype(float) * 1e9,
        "small_params": reference["small_params_b"].astype(float) * 1e9,
        "freq": reference["collaboration_frequency"].astype(float),
    })


def jobs_points(jobs: pd.DataFrame, value: str = "freq_pooled") -> pd.DataFrame:
    """Our per-job table as scaling-law points: pair jobs only (single-model runs have no ratio)."""
    from fsgen.analysis.stats import pair_mask

    pair_jobs = jobs[pair_mask(jobs)].dropna(subset=["large_params", "small_params"])
    return pd.DataFrame({
        "method": pair_jobs["method"], "benchmark": pair_jobs["benchmark"],
        "large": pair_jobs["large"], "small": pair_jobs["small"],
        "large_params": pair_jobs["large_params"].astype(float),
        "small_params": pair_jobs["small_params"].astype(float),
        "freq": pair_jobs[value].astype(float),
    })


def scaling_tables(jobs: pd.DataFrame, reference: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(fits, residuals) for our jobs (source "ours") and, if given, the reference ("paper")."""
    fits, residuals = fit_table(jobs_points(jobs), "ours")
    if reference is not None:
        ref_fits, ref_res = fit_table(reference_points(reference), "paper")
        fits = pd.concat([fits, ref_fits], ignore_index=True)
        residuals = pd.concat([residuals, ref_res], ignore_index=True)
    return fits, residuals
