"""Scaling-law forms, model comparison, bound flags and bootstrap intervals (fsgen.analysis.scaling_forms).

References are independent of the code under test: scipy's curve_fit and numpy's lstsq refitted
fold by fold, the Gaussian log-likelihood from scipy.stats, and coverage simulations from data
generated with known parameters.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import curve_fit, lsq_linear, minimize_scalar
from scipy.stats import norm

from fsgen.analysis.scaling import (
    ALPHA_GRID,
    BOUND_TOLERANCE,
    LOWER_BOUND,
    _bounded_line,
    fit_power_law_profile,
    fit_scaling,
    law_at_limits,
    parameters_at_bound,
    percentile_interval,
    power_law,
)
from fsgen.analysis.scaling_forms import (
    FORMS,
    aicc,
    bootstrap_tables,
    compare_forms,
    fit_batch,
    form_verdicts,
    forms_table,
    group_rng,
    loo_rmse,
    pair_replicates,
    predict,
    request_points,
    request_replicates,
    uncertainty_tables,
)

SIZES = [0.5, 1.8, 4.0, 7.0, 14.0, 32.0, 72.0]  # billions, the Qwen1.5 grid
PAIRS = [(large, small) for i, small in enumerate(SIZES) for large in SIZES[i + 1:]]  # 21 pairs
LARGE = np.array([p[0] for p in PAIRS]) * 1e9
SMALL = np.array([p[1] for p in PAIRS]) * 1e9
RATIO = LARGE / SMALL


def truth(form: str, ratio, small) -> np.ndarray:
    """Frequencies from each form with asymmetric parameters (written out, not via predict)."""
    ln_r, ln_n = np.log(ratio), np.log(small / 1e9)
    return {
        "power": 0.25 - 0.3 * ratio ** -0.6,
        "log_ratio": 0.07 + 0.018 * ln_r,
        "log_small": 0.16 - 0.027 * ln_n,
        "log_ratio_small": 0.11 + 0.015 * ln_r - 0.012 * ln_n,
    }[form]


def authors_fit(ratio, freq):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params, _ = curve_fit(power_law, ratio, freq, p0=(1, 1, 1), bounds=(0.05, np.inf), maxfev=20000)
    return params, float(((freq - power_law(ratio, *params)) ** 2).sum())


# ------------------------------------------------------------------ fitting and flags


@pytest.mark.parametrize("form", ["power", "log_ratio"])
def test_profile_solver_matches_curve_fit(form):
    rng = np.random.default_rng(7)
    freq = truth(form, RATIO, SMALL) + rng.normal(0, 0.004, len(RATIO))
    reference, reference_sse = authors_fit(RATIO, freq)
    params, sse = fit_power_law_profile(RATIO, freq)
    np.testing.assert_allclose(params[0], reference, rtol=2e-3, atol=1e-4)
    assert sse[0] <= reference_sse + 1e-12
    # many data sets at once give the one-at-a-time answers
    batch = truth(form, RATIO, SMALL) + rng.normal(0, 0.004, (5, len(RATIO)))
    together = fit_power_law_profile(RATIO, batch)[0]
    separate = np.array([fit_power_law_profile(np.tile(RATIO, (1, 1)), row)[0][0] for row in batch])
    np.testing.assert_allclose(together, separate, rtol=1e-9)


def test_bound_flag_fires_on_log_law_not_on_power_law():
    rng = np.random.default_rng(1)
    log_law = truth("log_ratio", RATIO, SMALL) + rng.normal(0, 0.002, len(RATIO))
    fit = fit_scaling(LARGE, SMALL, log_law)
    assert fit.alpha == pytest.approx(0.05, abs=1e-3)
    assert fit.at_bound == "alpha" and "not identified" in fit.status and "c + d·ln r" in fit.status
    power = truth("power", RATIO, SMALL) + rng.normal(0, 0.002, len(RATIO))
    fit = fit_scaling(LARGE, SMALL, power)
    assert fit.status == "ok" and fit.at_bound == "" and fit.alpha == pytest.approx(0.6, rel=0.15)
    rows = {r["form"]: r for r in compare_forms(RATIO, SMALL, log_law)}
    assert rows["power"]["at_bound"] == "alpha" and "not identified" in rows["power"]["status"]


def test_bootstrap_reports_replicates_at_the_bound():
    rng = np.random.default_rng(4)
    shares = {}
    for form in ("log_ratio", "power"):
        points = pd.DataFrame({"variant": "m", "benchmark": form, "large": "L", "small": "S", "large_params": LARGE,
                               "small_params": SMALL, "freq": truth(form, RATIO, SMALL) + rng.normal(0, 0.002, 21)})
        intervals, _ = bootstrap_tables(points, "ours", n_boot=100)
        alpha = intervals[(intervals["form"] == "power") & (intervals["parameter"] == "alpha")].iloc[0]
        shares[form] = alpha["share_at_bound"]
    assert shares["log_ratio"] > 0.5 and shares["power"] < 0.05, shares
    assert intervals[intervals["form"] != "power"]["share_at_bound"].isna().all()


def test_aicc_matches_gaussian_likelihood():
    rng = np.random.default_rng(2)
    residuals = rng.normal(0, 0.01, 9)
    sse, n = float((residuals ** 2).sum()), 9
    for k in (3, 4):
        log_lik = norm.logpdf(residuals, 0, math.sqrt(sse / n)).sum()  # at the MLE of σ²
        expected = -2 * log_lik + 2 * k + 2 * k * (k + 1) / (n - k - 1)
        # our AICc drops the constant n·(1 + ln 2π), the same for every form
        assert aicc(sse, n, k) == pytest.approx(expected - n * (1 + math.log(2 * math.pi)))
    assert math.isnan(aicc(sse, 5, 4)) and math.isnan(aicc(sse, 4, 3))  # n ≤ k + 1
    assert not math.isnan(aicc(sse, 6, 4))
    assert math.isnan(aicc(0.0, 9, 3))


def test_loo_matches_slow_refits():
    rng = np.random.default_rng(3)
    ratio, small = RATIO[:12], SMALL[:12]
    freq = truth("power", ratio, small) + rng.normal(0, 0.004, 12)
    errors_power, errors_linear = [], []
    for i in range(12):
        keep = np.arange(12) != i
        params, _ = authors_fit(ratio[keep], freq[keep])
        errors_power.append(power_law(ratio[i], *params) - freq[i])
        x = np.column_stack([np.ones(12), np.log(ratio), np.log(small / 1e9)])
        coef = np.linalg.lstsq(x[keep], freq[keep], rcond=None)[0]
        errors_linear.append(x[i] @ coef - freq[i])
    assert loo_rmse(FORMS["power"], ratio, small, freq) == pytest.approx(np.sqrt(np.mean(np.square(errors_power))),
                                                                         rel=1e-3)
    assert loo_rmse(FORMS["log_ratio_small"], ratio, small, freq) == pytest.approx(
        np.sqrt(np.mean(np.square(errors_linear))), rel=1e-9)


@pytest.mark.parametrize("form", list(FORMS))
def test_comparison_picks_the_true_form(form):
    rng = np.random.default_rng(11)
    freq = truth(form, RATIO, SMALL) + rng.normal(0, 0.002, len(RATIO))
    rows = pd.DataFrame(compare_forms(RATIO, SMALL, freq))
    assert rows.loc[rows["best_aicc"], "form"].tolist() == [form]
    assert rows.loc[rows["best_loo"], "form"].tolist() == [form]
    assert rows["aicc_weight"].sum() == pytest.approx(1.0)
    true = rows[rows["form"] == form].iloc[0]
    names = FORMS[form].parameters
    expected = {"power": (0.3, 0.6, 0.25), "log_ratio": (0.07, 0.018), "log_small": (0.16, -0.027),
                "log_ratio_small": (0.11, 0.015, -0.012)}[form]
    np.testing.assert_allclose([true[p] for p in names], expected, rtol=0.15, atol=0.003)


def test_too_few_pairs_say_so():
    for n, undefined in ((3, set(FORMS)), (5, {"power", "log_ratio_small"})):
        ratio, small = RATIO[[0, 1, 6, 11, 15][:n]], SMALL[[0, 1, 6, 11, 15][:n]]
        rows = {r["form"]: r for r in compare_forms(ratio, small, truth("power", ratio, small) + 0.001 * np.arange(n))}
        for name, row in rows.items():
            assert math.isnan(row["aicc"]) == (name in undefined), (n, name)
            if name in undefined:
                assert "AICc undefined" in row["status"]
    table = forms_table(pd.DataFrame({"variant": "m", "benchmark": "b", "large": "L", "small": "S",
                                      "large_params": LARGE[:3], "small_params": SMALL[:3], "freq": [0.1, 0.2, 0.15]}),
                        "ours")
    sentence = form_verdicts(table)["sentence"].iloc[0]
    assert sentence.startswith("ours m/b (3 pairs)") and "AICc is undefined" in sentence and "weak evidence" in sentence
    two = forms_table(pd.DataFrame({"variant": "m", "benchmark": "b", "large": "L", "small": "S",
                                    "large_params": LARGE[:2], "small_params": SMALL[:2], "freq": [0.1, 0.2]}), "ours")
    assert "too few pairs" in form_verdicts(two)["sentence"].iloc[0]


def test_collinear_predictors_are_not_identified():
    """One large model: ln r = ln N_large − ln N_small, so ln r and ln N_small are collinear."""
    small = np.array([0.5, 1.8, 4.0, 7.0, 14.0, 32.0]) * 1e9
    ratio = 72e9 / small
    rows = {r["form"]: r for r in compare_forms(ratio, small, truth("log_ratio", ratio, small) + 0.001 * np.sin(small))}
    assert "collinear" in rows["log_ratio_small"]["status"] and math.isnan(rows["log_ratio_small"]["aicc"])
    assert np.isfinite(rows["log_ratio"]["aicc"]) and np.isfinite(rows["log_small"]["aicc"])


# ------------------------------------------------------------------ bootstrap


def test_percentile_interval_known_percentiles():
    values = np.random.default_rng(0).permutation(1000).astype(float)  # 0 … 999
    low, high = percentile_interval(values)
    # linear interpolation: the q-quantile of 0 … N−1 is q·(N − 1)
    assert (low, high) == pytest.approx((0.025 * 999, 0.975 * 999))
    low, high = percentile_interval(np.r_[values, np.nan, np.nan])  # NaN replicates dropped
    assert (low, high) == pytest.approx((0.025 * 999, 0.975 * 999))
    low, high = percentile_interval(np.r_[np.arange(10.0), np.full(10, np.inf)], level=0.5)
    assert low == pytest.approx(0.25 * 19) and high == math.inf  # "not reached" replicates at the top
    both = percentile_interval(np.column_stack([values, 2 * values]), axis=0)
    np.testing.assert_allclose(both[1], [0.975 * 999, 2 * 0.975 * 999])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inf − inf between two "not reached" replicates is not a warning
        assert percentile_interval(np.r_[1.0, 2.0, 3.0, np.full(5, np.inf)], level=0.5) == (pytest.approx(2.75), math.inf)
    assert percentile_interval([0.3, np.nan, np.nan]) == (0.3, 0.3)  # one valid replicate is both bounds
    assert all(math.isnan(v) for v in percentile_interval([np.nan, np.nan]))


# ------------------------------------------------------------------ the profile solver against lsq_linear

PROFILE_RATIO = np.array([1.5, 2.2, 3.9, 7.0, 14.0, 40.0])
PROFILE_CASES = {  # which constraint is active at the optimum
    "free": 0.31 - 0.22 * PROFILE_RATIO ** -0.63 + np.array([0.004, -0.003, 0.001, 0.002, -0.004, 0.001]),
    "b at bound": 0.02 - 0.1 * PROFILE_RATIO ** -0.8,
    "b at bound, measured": np.array([0.019, 0.037, 0.046, 0.048, 0.043, 0.043]),  # the edge decides α (2.04)
    "a at bound": 0.3 + 0.02 * PROFILE_RATIO ** -0.5,  # falls with r: α runs to the top of the grid
    "alpha near the lower bound": 0.2 - 0.3 * PROFILE_RATIO ** -0.0525,  # between the first two grid points
    "alpha near the top": 0.4 - 0.9 * PROFILE_RATIO ** -19.3,  # between the last two grid points
    "a point at the mean": np.array([0.125, 0.25, 0.3125, 0.375, 0.5]),  # the mean 0.3125 is exact: a zero deviation
}


def reference_line(x, y):
    """(a, b, sse) of min Σ(y − b + a·x)² with a, b ≥ 0.05, by scipy's bounded linear least squares."""
    design = np.stack([-x, np.ones_like(x)], axis=1)
    a, b = lsq_linear(design, y, bounds=(LOWER_BOUND, np.inf), method="bvls", tol=1e-14).x
    return a, b, float(((design @ [a, b] - y) ** 2).sum())


def reference_profile_fit(ratio, y):
    """The bounded law fit by brute force: the profile SSE(α) on a fine grid, refined by scipy's
    bounded scalar minimiser; (a, α, b), sse."""
    profile = lambda alpha: reference_line(ratio ** -alpha, y)[2]  # noqa: E731
    grid = np.geomspace(LOWER_BOUND, 20.0, 400)
    sse = [profile(alpha) for alpha in grid]
    i = int(np.argmin(sse))
    refined = minimize_scalar(profile, bounds=(grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]),
                              method="bounded", options={"xatol": 1e-12})
    alpha = refined.x if refined.fun < sse[i] else grid[i]
    a, b, best = reference_line(ratio ** -alpha, y)
    return np.array([a, alpha, b]), best


@pytest.mark.parametrize("case", sorted(PROFILE_CASES))
def test_profile_solver_against_bounded_least_squares(case):
    freq = PROFILE_CASES[case]
    ratio = PROFILE_RATIO[: len(freq)]
    expected, expected_sse = reference_profile_fit(ratio, freq)
    for shared in (True, False):  # one ratio vector for all data sets, or one per data set
        params, sse = fit_power_law_profile(ratio if shared else ratio[None, :], freq)
        np.testing.assert_allclose(params[0], expected, rtol=1e-5, atol=1e-9)
        assert sse[0] == pytest.approx(expected_sse, rel=1e-6, abs=1e-18)


def test_bounded_line_on_one_distinct_x_is_nan_without_warnings():
    x, y = np.full(4, 0.3), np.array([0.1, 0.25, 0.2, 0.4])
    xc, yc = x - x.mean(), y - y.mean()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        line = _bounded_line(4, x.mean(), y.mean(), (xc * xc).sum(), (xc * yc).sum(), (yc * yc).sum(), LOWER_BOUND)
    assert np.isnan(line).all()


def test_profile_solver_on_one_ratio_is_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ratio in (np.full(4, 3.0), np.full((1, 4), 3.0)):
            params, sse = fit_power_law_profile(ratio, [0.1, 0.2, 0.15, 0.3])
            assert np.isnan(params).all() and np.isnan(sse).all()


def test_profile_solver_in_blocks_gives_the_one_at_a_time_answers():
    """Per-data-set ratios (pair bootstrap) over more than PROFILE_CHUNK_ELEMENTS / |grid| values are
    profiled in blocks of α; every block must land where it belongs."""
    rng = np.random.default_rng(5)
    ratio = np.sort(rng.uniform(1.5, 40.0, (2000, 7)), axis=1)  # 14000 values: blocks of 71 α
    freq = 0.31 - 0.22 * ratio ** rng.uniform(-3.0, -0.1, (2000, 1)) + rng.normal(0, 0.003, (2000, 7))
    together, _ = fit_power_law_profile(ratio, freq)
    for i in range(0, 2000, 97):
        np.testing.assert_allclose(together[i], fit_power_law_profile(ratio[i:i + 1], freq[i:i + 1])[0][0], rtol=1e-9)


def test_limits_and_bounds_on_their_edges():
    assert 0.003 - 0.002 == BOUND_TOLERANCE  # exactly on the tolerance (0.002 as the bound): still at it
    assert parameters_at_bound({"a": 0.003, "alpha": np.nextafter(0.003, 1), "b": np.nan}, lower=0.002) == ["a"]
    assert parameters_at_bound({"a": 0.2, "alpha": 0.0505, "b": 0.05}) == ["alpha", "b"]
    top = ALPHA_GRID[-1] * (1 - 1e-6)
    rows = [[LOWER_BOUND + 0.0009, 1.0, 0.3], [0.2, ALPHA_GRID[-1], 0.3], [0.2, top, 0.3], [0.2, np.nextafter(top, 0), 0.3],
            [0.2, (ALPHA_GRID[-2] + ALPHA_GRID[-1]) / 2, 0.3], [0.2, 1.0, ALPHA_GRID[-1]]]
    expected = [[True, False, False], [False, True, False], [False, True, False], [False, False, False],
                [False, False, False], [False, False, False]]
    assert law_at_limits(rows).tolist() == expected


def simulate_jobs(freq, n_requests, rng, concentration=20.0):
    """Per job (interventions, tokens) per request; each request has its own rate ~ Beta around
    the job's frequency (overdispersed, so resampling tokens instead of requests would undercover)."""
    jobs = []
    for p in freq:
        tokens = rng.poisson(30, n_requests) + 5
        rates = rng.beta(p * concentration, (1 - p) * concentration, n_requests)
        jobs.append((rng.binomial(tokens, rates).astype(float), tokens.astype(float)))
    return jobs


def test_request_bootstrap_covers_the_true_law():
    """Coverage of the 95% percentile interval of a, α, b (requests resampled within each job).

    300 data sets × 200 replicates. Tolerance |coverage − 0.95| ≤ 0.06: three Monte-Carlo
    standard errors (√(0.95·0.05/300) = 0.0126) plus 0.02 for the percentile interval's known
    finite-sample undercoverage (8 jobs, a nonlinear law, 200 replicates)."""
    rng = np.random.default_rng(5)
    n_sets, n_boot = 300, 200
    ratio, small = np.geomspace(1.5, 144, 8), np.full(8, 1e9)
    law = np.array([0.3, 0.6, 0.25])
    estimates, replicates = [], []
    for _ in range(n_sets):
        jobs = simulate_jobs(power_law(ratio, *law), 50, rng)
        estimates.append([i.sum() / t.sum() for i, t in jobs])
        replicates.append(request_replicates(jobs, n_boot, rng))
    reps = fit_batch(FORMS["power"], ratio, small, np.concatenate(replicates))[0].reshape(n_sets, n_boot, 3)
    low, high = percentile_interval(reps, axis=1)
    coverage = ((low <= law) & (law <= high)).mean(0)
    assert np.all(np.abs(coverage - 0.95) <= 0.06), coverage
    assert np.isfinite(fit_batch(FORMS["power"], ratio, small, np.array(estimates))[0]).all()


def test_pair_bootstrap_covers_a_linear_law():
    """Coverage of the pairs bootstrap for c + d·ln r + e·ln N (21 pairs, Gaussian noise).

    Tolerance 0.95 − 0.07 … 0.95 + 0.04: three Monte-Carlo SEs (0.0126 at 300 sets) below
    and above, plus 0.03 below: resampling 21 pairs for 3 coefficients undercovers (the
    bootstrap variance misses the n/(n − k) factor)."""
    rng = np.random.default_rng(6)
    n_sets, n_boot = 300, 200
    coef = np.array([0.11, 0.015, -0.012])
    freq = truth("log_ratio_small", RATIO, SMALL) + rng.normal(0, 0.01, (n_sets, len(RATIO)))
    parts = [pair_replicates(RATIO, SMALL, row, n_boot, rng) for row in freq]
    stacked = [np.concatenate([p[i] for p in parts]) for i in range(3)]
    reps = fit_batch(FORMS["log_ratio_small"], *stacked)[0].reshape(n_sets, n_boot, 3)
    low, high = percentile_interval(reps, axis=1)
    coverage = ((low <= coef) & (coef <= high)).mean(0)
    assert np.all((coverage >= 0.88) & (coverage <= 0.99)), coverage


def request_table(rng, n_requests=40):
    """Per-request counts of two methods × 6 pairs, frequencies from known laws."""
    rows = []
    for variant, law in (("oracle", (0.3, 0.6, 0.25)), ("proxy", (0.2, 0.3, 0.3))):
        for large, small in PAIRS[:6]:
            p = power_law(large / small, *law)
            for rid, (hits, tokens) in enumerate(zip(*simulate_jobs([p], n_requests, rng)[0])):
                rows.append({"variant": variant, "benchmark": "gsm8k", "large": f"L{large:g}", "small": f"S{small:g}",
                             "large_params": large * 1e9, "small_params": small * 1e9, "request_id": rid,
                             "tokens": tokens, "interventions": hits})
    return pd.DataFrame(rows)


def test_bootstrap_tables_compose_the_pieces_and_are_seeded():
    requests = request_table(np.random.default_rng(8))
    points, arrays = request_points(requests)
    intervals, bands = bootstrap_tables(points, "ours", requests, n_boot=150, seed=4)
    again, _ = bootstrap_tables(points, "ours", requests, n_boot=150, seed=4)
    pd.testing.assert_frame_equal(intervals, again)
    assert set(intervals["scheme"]) == {"pairs", "requests"} and (intervals["n_boot"] == 150).all()
    # the requests scheme of one group, rebuilt by hand from the pieces
    group = points[points["variant"] == "oracle"].reset_index(drop=True)
    ratio, small = (group["large_params"] / group["small_params"]).to_numpy(), group["small_params"].to_numpy()
    rng = group_rng(4, "ours", "requests", "oracle", "gsm8k")
    freq_reps = request_replicates([arrays[j] for j in group["job"]], 150, rng)
    form = FORMS["log_ratio"]
    reps = fit_batch(form, ratio, small, freq_reps)[0]
    low, high = np.percentile(reps, [2.5, 97.5], axis=0)
    mine = intervals[(intervals["scheme"] == "requests") & (intervals["variant"] == "oracle")
                     & (intervals["form"] == "log_ratio")].set_index("parameter")
    np.testing.assert_allclose(mine.loc[["c", "d"], "low"], low)
    np.testing.assert_allclose(mine.loc[["c", "d"], "high"], high)
    # its band: pointwise percentiles of the replicate curves, around the fitted curve
    band = bands[(bands["scheme"] == "requests") & (bands["variant"] == "oracle") & (bands["form"] == "log_ratio")]
    assert band["ratio"].min() == pytest.approx(ratio.min()) and band["ratio"].max() == pytest.approx(ratio.max())
    curves = predict(form, reps, band["ratio"].to_numpy(), band["small_params"].to_numpy())
    np.testing.assert_allclose(band["low"], np.percentile(curves, 2.5, axis=0))
    assert (band["low"] <= band["fit"]).all() and (band["fit"] <= band["high"]).all()


def test_uncertainty_tables_side_by_side():
    rng = np.random.default_rng(9)
    requests = request_table(rng)
    points, _ = request_points(requests)
    jobs = points.assign(method=points["variant"], router="always", freq_pooled=points["freq"])
    reference = pd.DataFrame({"method": "oracle", "benchmark": "gsm8k", "large_model": [f"Q{l:g}B" for l, _ in PAIRS],
                              "small_model": [f"Q{s:g}B" for _, s in PAIRS], "large_params_b": LARGE / 1e9,
                              "small_params_b": SMALL / 1e9,
                              "collaboration_frequency": truth("log_ratio", RATIO, SMALL) + rng.normal(0, 0.002, 21)})
    tables = uncertainty_tables(jobs, reference, requests, n_boot=100)
    assert set(tables) == {"scaling_forms", "scaling_bootstrap", "scaling_bands", "scaling_verdicts"}
    verdicts = tables["scaling_verdicts"].set_index(["source", "variant"])
    assert len(verdicts) == 3
    assert verdicts.loc[("paper", "oracle"), "best_aicc"] == "log_ratio"
    assert "c + d·ln r" in verdicts.loc[("paper", "oracle"), "sentence"]
    boot = tables["scaling_bootstrap"]
    assert set(boot[boot["source"] == "paper"]["scheme"]) == {"pairs"}  # one number per pair
    assert set(boot[boot["source"] == "ours"]["scheme"]) == {"pairs", "requests"}
    forms = tables["scaling_forms"]
    assert (forms.groupby(["source", "variant"]).size() == len(FORMS)).all()
