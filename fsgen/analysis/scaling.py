"""The collaboration scaling law and its alternative.

Law (FS-GEN): f(r) = b − a·r^(−α), r = large/small parameter ratio; fitted with scipy
`curve_fit`, p0 = (1, 1, 1), every parameter bounded below by 0.05 (as the authors did).
Alternative: f = c + d·log(N_small) (ordinary least squares; natural log, N in billions), i.e. the
frequency depends on the small model's size alone.

A parameter that ends at its lower bound is not identified by the data: with α at 0.05,
b − a·r^(−α) ≈ (b − a) + a·α·ln r, so the law has degenerated to c + d·ln r and the exponent
says nothing. Such fits are flagged in `status` and `at_bound`, not reported as "ok".

`fit_power_law_profile` solves the same bounded least-squares problem for many data sets at
once (bootstrap replicates, leave-one-out folds): for a fixed α the law is linear in (a, b), so
the bounded 2-parameter problem is solved in closed form and α is found on a grid, then refined
by golden-section search (a global solution; curve_fit from p0 = (1, 1, 1) is local and takes
~20 ms per fit).
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
# a parameter within this distance of LOWER_BOUND counts as at the bound (the optimiser stops
# within ~1e-8 of an active bound; 1e-3 is 2% of the bound, far below any identified exponent)
BOUND_TOLERANCE = 1e-3
LAW_PARAMETERS = ("a", "alpha", "b")
# α grid of the profile solver: 0.05 … 20, log-spaced (at α = 20 every r ≥ 2 gives r^(−α) < 1e-6:
# the law is flat, so larger α changes nothing)
ALPHA_GRID = np.geomspace(LOWER_BOUND, 20.0, 81)  # neighbours 7.8% apart
GOLDEN_STEPS = 24  # shrinks the bracket (two grid steps, 16% of α) by 0.618^24 ≈ 1e-5: α to ~2e-6 relative
PROFILE_CHUNK_ELEMENTS = 1_000_000  # data sets × grid points × points per block (8 MB per temporary)


def power_law(r, a, alpha, b):
    """f(r) = b − a·r^(−α)."""
    return b - a * np.power(r, -alpha)


def r_squared(y: np.ndarray, y_hat: np.ndarray) -> float:
    """1 − SS_res/SS_tot (NaN when y is constant)."""
    y, y_hat = np.asarray(y, float), np.asarray(y_hat, float)
    if not (y != y[:1]).any():  # constant y; its mean can round off it, leaving a tiny SS_tot > 0
        return math.nan
    ss_tot = float(((y - y.mean()) ** 2).sum())
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
    status: str = "ok"  # "ok", or why a fit was not made / is not identified
    at_bound: str = ""  # law parameters at their lower bound, comma-separated ("" when none)
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


def parameters_at_bound(params: dict[str, float], lower: float = LOWER_BOUND) -> list[str]:
    """Names of the parameters within BOUND_TOLERANCE of the lower bound (NaNs are not)."""
    return [name for name, value in params.items() if np.isfinite(value) and value - lower <= BOUND_TOLERANCE]


def law_at_limits(params) -> np.ndarray:
    """[B, 3] bool: a, α, b of profile fits at the lower bound, or α at the solver's upper end
    (ALPHA_GRID[-1]: the law is flat over the data and a fits one point: not identified either)."""
    params = np.atleast_2d(np.asarray(params, float))
    limits = params - LOWER_BOUND <= BOUND_TOLERANCE
    limits[:, 1] |= params[:, 1] >= ALPHA_GRID[-1] * (1 - 1e-6)
    return limits


def bound_status(bounded: list[str]) -> str:
    """The status of a law fit with parameters at their bound: what is not identified."""
    text = f"not identified: {', '.join(bounded)} at the lower bound {LOWER_BOUND:g}"
    if "alpha" in bounded:
        text += " (the exponent is not identified; the law reduces to c + d·ln r)"
    return text


def _bounded_line(n, x_mean, y_mean, sxx, sxy, syy, lower):
    """Bounded least squares of y ≈ b − a·x (a, b ≥ lower) from centred sums (any broadcastable
    shapes): SSE(a, b) = Syy + 2a·Sxy + a²·Sxx + n·(ȳ − b + a·x̄)². A convex problem: the free
    optimum when feasible, else the best of the edges a = lower and b = lower (each a clamped
    1-D least squares). Returns a, b, sse; NaN where Sxx = 0 (one distinct x)."""
    def sse(a, b):
        return syy + 2 * a * sxy + a * a * sxx + n * (y_mean - b + a * x_mean) ** 2

    with np.errstate(divide="ignore", invalid="ignore"):
        a_free = -sxy / sxx
        # edge b = lower: a = Σx(lower − y) / Σx², clamped
        a_on_b_edge = np.maximum(lower, (n * x_mean * (lower - y_mean) - sxy) / (sxx + n * x_mean ** 2))
    b_free = y_mean + a_free * x_mean
    b_on_a_edge = np.maximum(lower, y_mean + lower * x_mean)  # edge a = lower: b = mean(y + lower·x)
    a_free, b_free, a_on_b_edge, b_on_a_edge = np.broadcast_arrays(a_free, b_free, a_on_b_edge, b_on_a_edge)
    edge = np.full_like(a_free, lower)
    free_ok = (a_free >= lower) & (b_free >= lower)
    candidates = np.stack([np.where(free_ok, sse(a_free, b_free), np.inf),
                           sse(edge, b_on_a_edge), sse(a_on_b_edge, edge)])  # [3, ...]
    best = candidates.argmin(0)
    degenerate = np.broadcast_to(~(sxx > 0), best.shape)
    a = np.where(degenerate, np.nan, np.choose(best, [a_free, edge, a_on_b_edge]))
    b = np.where(degenerate, np.nan, np.choose(best, [b_free, b_on_a_edge, edge]))
    return a, b, np.where(degenerate, np.nan, np.maximum(candidates.min(0), 0.0))


def _profile(alpha, log_r, freq):
    """(a, b, sse) of the best line at each α: alpha [B, G], log_r and freq [B, n] -> [B, G]."""
    x = np.exp(-alpha[..., None] * log_r[:, None, :])  # [B, G, n]
    y = freq[:, None, :]
    x_mean, y_mean = x.mean(-1), y.mean(-1)
    xc, yc = x - x_mean[..., None], y - y_mean[..., None]
    return _bounded_line(x.shape[-1], x_mean, y_mean, (xc * xc).sum(-1), (xc * yc).sum(-1), (yc * yc).sum(-1),
                         LOWER_BOUND)


def _profile_grid(log_r, freq):
    """SSE [B, G] at every α of ALPHA_GRID; the ratios shared by all data sets (log_r [n]) make
    Sxy one matrix product."""
    x = np.exp(-ALPHA_GRID[:, None] * log_r[None, :])  # [G, n]
    x_mean, y_mean = x.mean(-1), freq.mean(-1)
    xc, yc = x - x_mean[:, None], freq - y_mean[:, None]
    return _bounded_line(x.shape[-1], x_mean[None, :], y_mean[:, None], (xc * xc).sum(-1)[None, :], yc @ xc.T,
                         (yc * yc).sum(-1)[:, None], LOWER_BOUND)[2]


def fit_power_law_profile(ratio, freq) -> tuple[np.ndarray, np.ndarray]:
    """Bounded least squares of f = b − a·r^(−α) (a, α, b ≥ 0.05) for many data sets at once.

    ratio: [B, n], or [n] shared by all data sets; freq: [B, n] (or [n]: one data set). Returns
    params [B, 3] = (a, α, b) and the residual sum of squares [B]; NaN rows where the ratios of
    a data set are all equal.
    """
    freq = np.atleast_2d(np.asarray(freq, float))
    shared = np.ndim(ratio) == 1
    ratio = np.broadcast_to(np.atleast_2d(np.asarray(ratio, float)), freq.shape)
    log_r = np.log(ratio)  # [B, n]
    if shared:
        sse_grid = _profile_grid(log_r[0], freq)  # [B, G]
    else:
        grid = np.broadcast_to(ALPHA_GRID, (len(freq), len(ALPHA_GRID)))
        step = max(1, PROFILE_CHUNK_ELEMENTS // freq.size)  # grid points per block: bounds the memory
        sse_grid = np.concatenate([_profile(grid[:, i:i + step], log_r, freq)[2]
                                   for i in range(0, grid.shape[1], step)], axis=1)
    best = np.nan_to_num(sse_grid, nan=np.inf).argmin(1)  # [B]
    lo = ALPHA_GRID[np.maximum(best - 1, 0)][:, None]  # [B, 1] bracket around the grid minimum
    hi = ALPHA_GRID[np.minimum(best + 1, len(ALPHA_GRID) - 1)][:, None]
    ratio_g = (math.sqrt(5) - 1) / 2
    for _ in range(GOLDEN_STEPS):
        left, right = hi - ratio_g * (hi - lo), lo + ratio_g * (hi - lo)
        sse_pair = np.nan_to_num(_profile(np.concatenate([left, right], 1), log_r, freq)[2], nan=np.inf)  # [B, 2]
        go_left = sse_pair[:, :1] <= sse_pair[:, 1:]
        hi, lo = np.where(go_left, right, hi), np.where(go_left, lo, left)
    # the refined α, or the grid point when it is better (a minimum exactly at an end of the grid)
    candidates = np.concatenate([(lo + hi) / 2, ALPHA_GRID[best][:, None]], 1)  # [B, 2]
    a, b, sse = _profile(candidates, log_r, freq)
    pick = np.nan_to_num(sse, nan=np.inf).argmin(1)[:, None]
    params = np.concatenate([np.take_along_axis(v, pick, 1) for v in (a, candidates, b)], axis=1)  # [B, 3]
    sse = ((freq - power_law(ratio, *(params[:, i:i + 1] for i in range(3)))) ** 2).sum(1)  # exact, not from sums
    params[~np.isfinite(sse)] = np.nan
    return params, sse


def percentile_interval(replicates, level: float = 0.95, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval along `axis`, NaN replicates dropped (linear interpolation,
    numpy's default). ±inf replicates ("not reached") are ordered values: a bound that falls
    among them is ±inf. All-NaN gives NaN. Returns (low, high), each of the other axes' shape."""
    reps = np.moveaxis(np.sort(np.asarray(replicates, float), axis=axis), axis, -1)  # NaNs sort last
    n_valid = (~np.isnan(reps)).sum(-1)  # [...]
    bounds = []
    for tail in ((1 - level) / 2, (1 + level) / 2):
        pos = tail * np.maximum(n_valid - 1, 0)
        below = np.floor(pos).astype(int)[..., None]
        above = np.ceil(pos).astype(int)[..., None]
        low_value = np.take_along_axis(reps, below, -1)[..., 0]
        high_value = np.take_along_axis(reps, above, -1)[..., 0]
        weight = pos - below[..., 0]
        with np.errstate(invalid="ignore"):
            value = np.where((weight == 0) | (low_value == high_value), low_value,
                             low_value + weight * (high_value - low_value))
        bounds.append(np.where(n_valid > 0, value, np.nan))
    return bounds[0], bounds[1]


def fit_small_size(small_params, freq) -> tuple[float, float, np.ndarray]:
    """(c, d, fitted) of f = c + d·ln(N_small in billions); NaNs when all small sizes are equal."""
    x = np.log(np.asarray(small_params, float) / 1e9)
    freq = np.asarray(freq, float)
    if np.ptp(x) == 0:
        return math.nan, math.nan, np.full_like(freq, math.nan)
    d, c = np.polyfit(x, freq, 1)
    return float(c), float(d), c + d * x


def fit_scaling(large_params, small_params, freq) -> ScalingFit:
    """Fit both models to one variant × benchmark's points (parameter counts in units of 1)."""
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
        bounded = parameters_at_bound(dict(a=fit.a, alpha=fit.alpha, b=fit.b))
        fit.at_bound = ",".join(bounded)
        if bounded:
            fit.status = bound_status(bounded)
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
    """Fit every variant × benchmark of `points`.

    points columns: variant, benchmark, large, small, large_params, small_params, freq.
    Returns (fits: one row per variant × benchmark, residuals: one row per point).
    """
    need = ["variant", "benchmark", "large", "small", "large_params", "small_params", "freq"]
    missing = [c for c in need if c not in points.columns]
    if missing:
        raise KeyError(f"scaling-law points ({source}) lack columns {missing}")
    fits, residuals = [], []
    for (variant, benchmark), group in points.groupby(["variant", "benchmark"], sort=True):
        group = group.dropna(subset=["large_params", "small_params", "freq"])
        fit = fit_scaling(group["large_params"], group["small_params"], group["freq"])
        fits.append({"source": source, "variant": variant, "benchmark": benchmark, **fit.row()})
        ratio = group["large_params"].to_numpy(float) / group["small_params"].to_numpy(float)
        for i, (_, point) in enumerate(group.iterrows()):
            residuals.append({
                "source": source, "variant": variant, "benchmark": benchmark,
                "large": point["large"], "small": point["small"], "ratio": ratio[i],
                "small_params": point["small_params"], "freq": point["freq"],
                "residual": fit.residuals[i] if fit.residuals else math.nan,
                "alt_residual": fit.alt_residuals[i] if fit.alt_residuals else math.nan,
            })
    columns = ["source", "variant", "benchmark", *ScalingFit(0).row().keys()]
    return pd.DataFrame(fits, columns=columns), pd.DataFrame(residuals)


def reference_points(reference: pd.DataFrame) -> pd.DataFrame:
    """The paper's CSV (large_params_b, small_params_b in billions) as scaling-law points; the
    paper ran each method once, so its method names the points' variant."""
    need = ["method", "benchmark", "large_model", "small_model", "large_params_b", "small_params_b",
            "collaboration_frequency"]
    missing = [c for c in need if c not in reference.columns]
    if missing:
        raise KeyError(f"reference CSV lacks columns {missing} (expected {need})")
    return pd.DataFrame({
        "variant": reference["method"], "benchmark": reference["benchmark"],
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
        "variant": pair_jobs["variant"], "benchmark": pair_jobs["benchmark"],
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
