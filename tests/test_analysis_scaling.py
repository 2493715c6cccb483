"""Scaling-law fits, the reference join, and the aggregate tables."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from fsgen.analysis.routing import online_tradeoff
from fsgen.analysis import scaling
from fsgen.analysis.scaling import (
    bound_status,
    fit_power_law,
    fit_scaling,
    fit_small_size,
    fit_table,
    jobs_points,
    power_law,
    r_squared,
    reference_points,
    scaling_tables,
)
from fsgen.analysis.tables import reference_comparison, wide_table

SIZES = [0.5, 1.8, 4.0, 7.0, 14.0, 32.0, 72.0]  # billions, like the Qwen1.5 grid


def grid_pairs():
    return [(l, s) for i, s in enumerate(SIZES) for l in SIZES[i + 1:]]


def test_law_recovers_parameters_from_noisy_points():
    rng = np.random.default_rng(0)
    a, alpha, b = 0.3, 0.6, 0.25
    large = np.array([l for l, _ in grid_pairs()]) * 1e9
    small = np.array([s for _, s in grid_pairs()]) * 1e9
    freq = power_law(large / small, a, alpha, b) + rng.normal(0, 0.002, len(large))
    fit = fit_scaling(large, small, freq)
    assert fit.status == "ok" and fit.n_pairs == 21
    assert fit.a == pytest.approx(a, rel=0.1)
    assert fit.alpha == pytest.approx(alpha, rel=0.1)
    assert fit.b == pytest.approx(b, rel=0.05)
    assert 0.95 < fit.r2 <= 1
    assert len(fit.residuals) == 21 and abs(np.mean(fit.residuals)) < 0.002


def test_alternative_recovers_log_small_law():
    large = np.array([4.0, 7.0, 7.0, 14.0, 14.0]) * 1e9
    small = np.array([0.5, 0.5, 1.8, 1.8, 4.0]) * 1e9
    freq = 0.1 - 0.02 * np.log(small / 1e9)
    fit = fit_scaling(large, small, freq)
    assert fit.alt_c == pytest.approx(0.1) and fit.alt_d == pytest.approx(-0.02)
    assert fit.alt_r2 == pytest.approx(1.0)


def test_refuses_fewer_than_three_pairs():
    fit = fit_scaling([4e9, 7e9], [1e9, 1e9], [0.1, 0.12])
    assert fit.n_pairs == 2 and math.isnan(fit.a) and math.isnan(fit.r2)
    assert "2 pair(s) < 3" in fit.status


def test_three_pairs_are_enough():
    fit = fit_scaling([2e9, 4e9, 8e9], [1e9, 1e9, 2e9], [0.08, 0.11, 0.1])
    assert fit.n_pairs == 3 and np.isfinite(fit.a)


def write_reference(path) -> pd.DataFrame:
    """A CSV shaped like the published one, generated from a law per method × benchmark."""
    rng = np.random.default_rng(3)
    rows = []
    for m, method in enumerate(("oracle", "contrastive", "proxy")):
        for bench in ("gsm8k", "mbpp"):
            for large, small in grid_pairs()[: 8 + 4 * m]:
                f = power_law(large / small, 0.1 + 0.02 * m, 0.4, 0.2) + rng.normal(0, 0.003)
                rows.append({"method": method, "benchmark": bench, "large_model": f"Qwen1.5-{large:g}B",
                             "small_model": f"Qwen1.5-{small:g}B", "large_params_b": large,
                             "small_params_b": small, "collaboration_frequency": round(f, 3)})
    # a method with only two pairs must be reported, not fitted
    for large, small in grid_pairs()[:2]:
        rows.append({"method": "oracle", "benchmark": "mtbench", "large_model": f"Qwen1.5-{large:g}B",
                     "small_model": f"Qwen1.5-{small:g}B", "large_params_b": large, "small_params_b": small,
                     "collaboration_frequency": 0.1})
    df = pd.DataFrame(rows)
    df.to_csv(path, index=False)
    return df


def our_jobs(names=("Qwen/Qwen1.5-{}B", "Qwen/Qwen1.5-{}B")) -> pd.DataFrame:
    rows = []
    for large, small in grid_pairs()[:6]:
        for bench in ("gsm8k", "mbpp"):
            rows.append({"benchmark": bench, "variant": "oracle", "method": "oracle", "router": "always",
                         "large": names[0].format(f"{large:g}"), "small": names[1].format(f"{small:g}"),
                         "large_params": large * 1e9, "small_params": small * 1e9,
                         "freq_pooled": 0.1 + 0.001 * large, "freq_pooled_low": 0.09, "freq_pooled_high": 0.2,
                         "accuracy": 0.5, "small_accuracy": 0.3, "s2_call_rate": 1.0})
    return pd.DataFrame(rows)


def test_reference_is_joined_and_fitted(tmp_path):
    path = tmp_path / "reference.csv"
    write_reference(path)
    reference = pd.read_csv(path)
    jobs = our_jobs()
    fits, residuals = scaling_tables(jobs, reference)
    paper = fits[fits["source"] == "paper"]
    assert len(paper) == 7  # 3 methods × 2 benchmarks + oracle/mtbench
    fitted = paper[paper["n_pairs"] >= 3]
    assert len(fitted) == 6
    assert fitted["r2"].between(0, 1).all() and fitted["alt_r2"].between(0, 1).all()
    # laws generated with α = 0.4: identified, no parameter at its bound
    assert (fitted["status"] == "ok").all() and (fitted["at_bound"] == "").all()
    refused = paper[paper["benchmark"] == "mtbench"].iloc[0]
    assert refused["n_pairs"] == 2 and "not fitted" in refused["status"] and math.isnan(refused["r2"])
    ours = fits[fits["source"] == "ours"]
    assert set(ours["benchmark"]) == {"gsm8k", "mbpp"} and (ours["n_pairs"] == 6).all()
    assert len(residuals[residuals["source"] == "paper"]) == len(reference)

    comparison = reference_comparison(jobs, reference)
    matched = comparison[comparison["matched"]]
    # our 6 oracle pairs per benchmark; the reference has the first 8 oracle pairs
    assert len(matched) == 12
    row = matched[(matched["benchmark"] == "gsm8k") & (matched["large_model"] == "Qwen1.5-1.8B")].iloc[0]
    expected = reference[(reference["method"] == "oracle") & (reference["benchmark"] == "gsm8k")
                         & (reference["large_model"] == "Qwen1.5-1.8B")]["collaboration_frequency"].iloc[0]
    assert row["difference"] == pytest.approx(row["freq_ours"] - expected)
    # unmatched reference rows stay, without our value
    assert comparison["freq_ours"].isna().sum() == len(reference) - 12


def test_reference_with_missing_columns_names_them(tmp_path):
    with pytest.raises(KeyError, match="collaboration_frequency"):
        reference_points(pd.DataFrame({"method": ["oracle"]}))


def test_wide_table_shape():
    jobs = our_jobs()
    wide = wide_table(jobs)
    assert list(wide.columns) == ["variant", "large", "small", "gsm8k", "mbpp", "status"]
    assert len(wide) == 6 and (wide["status"] == "ok").all()


def test_online_tradeoff_adds_never_end():
    jobs = our_jobs().iloc[:2].copy()  # one pair, two benchmarks, router always
    routed = jobs.assign(variant="oracle-entropy-1", router="entropy:1.0", s2_call_rate=0.3, accuracy=0.45)
    online = online_tradeoff(pd.concat([jobs, routed], ignore_index=True))
    assert len(online) == 6  # per benchmark: never, routed, always
    g = online[online["benchmark"] == "gsm8k"]
    assert g["router"].tolist() == ["never", "entropy:1.0", "always"]
    assert g["s2_call_rate"].tolist() == [0.0, 0.3, 1.0]
    assert g["accuracy"].tolist() == [0.3, 0.45, 0.5]


# ---------------------------------------------------------------- the fit, on its edges (issue #18)

RATIO = np.array([1.5, 2.2, 3.9, 7.0, 14.0, 40.0])
SMALL_B = np.array([0.5, 0.5, 1.8, 1.8, 4.0, 0.5])  # billions
NOISE = np.array([0.004, -0.003, 0.001, 0.002, -0.004, 0.001])
FIT_FIELDS = ("n_pairs", "a", "alpha", "b", "r2", "alt_c", "alt_d", "alt_r2", "status", "at_bound")


def test_r_squared_against_its_definition():
    y, y_hat = [0.12, 0.31, 0.2, 0.45], [0.1, 0.3, 0.25, 0.4]
    mean = sum(y) / len(y)
    ss_tot = sum((v - mean) ** 2 for v in y)
    ss_res = sum((v - w) ** 2 for v, w in zip(y, y_hat))
    assert r_squared(y, y_hat) == pytest.approx(1 - ss_res / ss_tot, rel=1e-12)
    assert math.isnan(r_squared([0.2, 0.2, 0.2], [0.1, 0.2, 0.3]))  # constant y: no variance to explain


def test_bound_status_words():
    assert bound_status(["b"]) == "not identified: b at the lower bound 0.05"
    assert bound_status(["a", "alpha"]) == ("not identified: a, alpha at the lower bound 0.05 (the exponent is not "
                                            "identified; the law reduces to c + d·ln r)")


def test_power_law_fit_recovers_an_exact_law_with_a_small_exponent():
    """From p0 = (1, 1, 1) curve_fit lands on the exact parameters to 1e-7 (from its default start only
    to 1e-4)."""
    params, fitted = fit_power_law(RATIO, 0.2 - 0.3 * RATIO ** -0.0525)
    assert params == pytest.approx([0.3, 0.0525, 0.2], rel=1e-5)
    assert fitted == pytest.approx(0.2 - 0.3 * RATIO ** -0.0525, abs=1e-9)


def test_power_law_fit_that_needs_hundreds_of_evaluations_converges():
    """Here the law's best is its α → ∞ limit (the first point fitted exactly, the others at their
    mean); curve_fit takes ~470 evaluations to get there (its default cap is 300)."""
    ratio, freq = np.array([6.797, 16.443, 75.942]), np.array([0.314, 0.514, 0.26])
    _, fitted = fit_power_law(ratio, freq)
    assert ((freq - fitted) ** 2).sum() == pytest.approx(((freq[1:] - freq[1:].mean()) ** 2).sum(), rel=1e-3)


@pytest.mark.parametrize("freq, bounded", [
    (0.3 + 0.02 * RATIO ** -0.5, ["a", "alpha"]),  # falls with r: a and α pinned, the law is c + d·ln r
    (0.02 - 0.1 * RATIO ** -0.8, ["b"]),  # wants b = 0.02 < 0.05
])
def test_parameters_at_their_bound_are_flagged(freq, bounded):
    fit = fit_scaling(RATIO * SMALL_B * 1e9, SMALL_B * 1e9, freq)
    assert fit.at_bound == ",".join(bounded) and fit.status == bound_status(bounded)
    assert all(abs(getattr(fit, name) - 0.05) < 1e-3 for name in bounded)


def test_missing_or_impossible_points_are_dropped():
    """None / NaN in any input, or a zero small size, drop that point and nothing else; the law
    depends on the ratio alone, so sizes in billions give the same law."""
    large, small = list(RATIO * SMALL_B * 1e9), list(SMALL_B * 1e9)
    freq = list(0.31 - 0.22 * RATIO ** -0.63 + NOISE)
    clean = fit_scaling(large, small, freq)
    bad = [(None, 1e9, 0.2), (7e9, None, 0.2), (7e9, float("nan"), 0.2), (7e9, 1e9, None), (float("inf"), 1e9, 0.2),
           (7e9, 0.0, 0.2)]
    dirty = fit_scaling(large + [p[0] for p in bad], small + [p[1] for p in bad], freq + [p[2] for p in bad])
    billions = fit_scaling(RATIO * SMALL_B, SMALL_B, freq)
    assert clean.status == "ok" and clean.n_pairs == 6
    for field in FIT_FIELDS:
        assert getattr(dirty, field) == pytest.approx(getattr(clean, field), rel=1e-12), field
    for field in ("n_pairs", "a", "alpha", "b", "r2", "alt_d", "alt_r2"):
        assert getattr(billions, field) == pytest.approx(getattr(clean, field), rel=1e-6), field


def test_residuals_of_both_models_against_a_plain_least_squares():
    large, small = RATIO * SMALL_B * 1e9, SMALL_B * 1e9
    freq = 0.31 - 0.22 * RATIO ** -0.63 + NOISE
    fit = fit_scaling(large, small, freq)
    design = np.stack([np.ones(6), np.log(SMALL_B)], axis=1)  # f = c + d·ln(N in billions)
    (c, d), *_ = np.linalg.lstsq(design, freq, rcond=None)
    assert (fit.alt_c, fit.alt_d) == pytest.approx((c, d), rel=1e-9)
    assert fit.alt_residuals == pytest.approx(list(freq - design @ [c, d]), abs=1e-12)
    assert fit.residuals == pytest.approx(list(freq - power_law(RATIO, fit.a, fit.alpha, fit.b)), abs=1e-12)


def test_one_small_size_fits_the_law_and_says_the_alternative_is_not_fitted():
    fit = fit_scaling(RATIO * 1e9, np.full(6, 1e9), 0.31 - 0.22 * RATIO ** -0.63)
    assert fit.status == "alternative not fitted: one small-model size"
    assert fit.alpha == pytest.approx(0.63, rel=1e-4) and math.isnan(fit.alt_c) and fit.alt_residuals == []


def test_the_alternative_on_one_small_size_is_nan_of_the_data_shape():
    c, d, fitted = fit_small_size([1e9, 1e9, 1e9], [0, 1, 1])  # frequencies may come as integers
    assert math.isnan(c) and math.isnan(d) and fitted.shape == (3,) and np.isnan(fitted).all()


def test_a_law_that_does_not_converge_says_so_and_keeps_the_alternative(monkeypatch):
    def fails(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    monkeypatch.setattr(scaling, "curve_fit", fails)
    fit = fit_scaling(RATIO * SMALL_B * 1e9, SMALL_B * 1e9, 0.31 - 0.22 * RATIO ** -0.63 + NOISE)
    assert fit.status == "law not fitted: Optimal parameters not found" and math.isnan(fit.a)
    assert np.isfinite(fit.alt_r2) and len(fit.alt_residuals) == 6


FIT_COLUMNS = ["source", "variant", "benchmark", "n_pairs", "a", "alpha", "b", "r2", "alt_c", "alt_d", "alt_r2",
               "status", "at_bound"]
RESIDUAL_COLUMNS = ["source", "variant", "benchmark", "large", "small", "ratio", "small_params", "freq", "residual",
                    "alt_residual"]


def table_points() -> pd.DataFrame:
    """Three groups given out of order, an unrelated NaN column, a point without a frequency, and a
    group of two pairs (not fitted)."""
    rows = []
    for variant, benchmark, (a, alpha, b), n in [("proxy", "mbpp", (0.2, 0.5, 0.3), 6),
                                                  ("contrastive", "gsm8k", (0.1, 0.8, 0.25), 6),
                                                  ("contrastive", "arith", (0.1, 0.8, 0.25), 2)]:
        for i in range(n):
            rows.append({"variant": variant, "benchmark": benchmark, "large": f"L{i}", "small": f"S{i}",
                         "large_params": RATIO[i] * SMALL_B[i] * 1e9, "small_params": SMALL_B[i] * 1e9,
                         "freq": power_law(RATIO[i], a, alpha, b) + NOISE[i], "note": math.nan})
    rows.append({**rows[0], "large": "Lx", "freq": math.nan})
    return pd.DataFrame(rows)


def test_fit_table_rows_and_residuals_per_point():
    points = table_points()
    fits, residuals = fit_table(points, "ours")
    assert list(fits.columns) == FIT_COLUMNS and list(residuals.columns) == RESIDUAL_COLUMNS
    assert fits[["variant", "benchmark"]].values.tolist() == [["contrastive", "arith"], ["contrastive", "gsm8k"],
                                                              ["proxy", "mbpp"]]
    assert (fits["source"] == "ours").all() and fits["n_pairs"].tolist() == [2, 6, 6]
    assert len(residuals) == 14  # the point without a frequency has no row
    for _, row in residuals.iterrows():
        fit = fits[(fits["variant"] == row["variant"]) & (fits["benchmark"] == row["benchmark"])].iloc[0]
        i = int(row["large"][1:])
        assert row["small"] == f"S{i}" and row["source"] == "ours"
        assert row["ratio"] == pytest.approx(RATIO[i], rel=1e-12) and row["small_params"] == SMALL_B[i] * 1e9
        if row["benchmark"] == "arith":  # two pairs: no fit, no residuals
            assert math.isnan(row["residual"]) and math.isnan(row["alt_residual"])
            continue
        law = power_law(RATIO[i], fit["a"], fit["alpha"], fit["b"])
        assert row["residual"] == pytest.approx(row["freq"] - law, abs=1e-12)
        assert row["alt_residual"] == pytest.approx(row["freq"] - fit["alt_c"] - fit["alt_d"] * math.log(SMALL_B[i]),
                                                    abs=1e-12)
    empty, _ = fit_table(points.iloc[:0], "ours")
    assert list(empty.columns) == FIT_COLUMNS and empty.empty
    with pytest.raises(KeyError, match=r"^\"scaling-law points \(paper\) lack columns \['freq'\]\"$"):
        fit_table(points.drop(columns="freq"), "paper")


def test_points_from_the_reference_and_our_jobs(tmp_path):
    reference = write_reference(tmp_path / "reference.csv")
    points = reference_points(reference)
    assert points["large_params"].tolist() == [v * 1e9 for v in reference["large_params_b"]]
    assert points["small_params"].tolist() == [v * 1e9 for v in reference["small_params_b"]]
    jobs = our_jobs().assign(accuracy=math.nan)  # an unrelated missing value keeps the job
    jobs.loc[3, "small_params"] = math.nan
    assert len(jobs_points(jobs)) == len(jobs) - 1
    fits, residuals = scaling_tables(jobs, reference)
    assert fits.index.tolist() == list(range(len(fits))) and residuals.index.tolist() == list(range(len(residuals)))
