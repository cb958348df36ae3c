"""LR tests that cannot mislead: nesting checked on the models' arrays (fixed and random
parts, level-2 functions, associations), refused with its reason when it fails, χ̄²
mixtures written out, a larger fit that did not find its maximum flagged, and
``compare()`` testing exactly the nested consecutive fits."""

import types
import warnings

import numpy as np
import pytest
import scipy.stats

import melsm
from melsm.results.nesting import nested, outside

MEAN = "hamdep ~ week + (1 | id)"
WIDE = "hamdep ~ week + endog + endweek + (1 | id)"
CORR = "corr:mean:Intercept,within:Intercept"
RIESBY = {
    "week": dict(mean=MEAN),
    "endog": dict(mean="hamdep ~ endog + endweek + (1 | id)"),
    "endog_only": dict(mean="hamdep ~ endog + (1 | id)"),
    "constant": dict(mean="hamdep ~ week + endog + (1 | id)"),
    "function": dict(mean="hamdep ~ week + endog + (1 | id)", between="~ endog"),
    "function_small": dict(mean=MEAN, between="~ endog"),
    "wide": dict(mean=WIDE),
    "dummies": dict(mean="hamdep ~ 0 + C(endog) + week + (1 | id)"),
    "none": dict(mean=MEAN, within="~ week + (1 | id)", association="none"),
    "correlated": dict(mean=MEAN, within="~ week + (1 | id)"),
    "quadratic": dict(mean=MEAN, within="~ week + (1 | id)", association="quadratic"),
    "wide_correlated": dict(mean=WIDE, within="~ week + (1 | id)"),
    "wide_none": dict(mean=WIDE, within="~ week + (1 | id)", association="none"),
}


@pytest.fixture(scope="module")
def fits(reisby):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmBoundaryWarning)
        warnings.simplefilter("error", melsm.MelsmConvergenceWarning)
        return {name: melsm.Model(data=reisby, **spec).fit() for name, spec in RIESBY.items()}


def model(data, mean, within="~ 1", **kwargs):
    """An unfitted model in the shape ``nested`` reads (``fit.model``)."""
    return types.SimpleNamespace(model=melsm.Model(mean, within, data=data, **kwargs))


def chibar2_p(statistic, df):
    return 0.5 * scipy.stats.chi2.sf(statistic, df - 1) + 0.5 * scipy.stats.chi2.sf(statistic, df)


# ---- non-nested pairs are refused, with the reason ---------------------------------------
@pytest.mark.parametrize("small, big, reason", [
    ("week", "endog", "the smaller model's mean function has 'week', which the larger lacks"),
    ("function_small", "wide", "the smaller model's variance of mean:Intercept is a level-2 function of "
                               "'endog'; the larger model's is constant"),
    ("quadratic", "wide_correlated", "the smaller model has the quadratic association (τ_q), which the larger "
                                     "lacks"),
    ("correlated", "wide_none", "the smaller model correlates its location and scale effects; the larger "
                                "fixes those correlations at 0 (association 'none')"),
    ("wide", "correlated", "the smaller model's mean function has 'endog', which the larger lacks"),
])
def test_non_nested_fits_are_refused_with_the_reason(fits, small, big, reason):
    assert fits[small].n_params < fits[big].n_params
    for one, other in ((small, big), (big, small)):
        with pytest.raises(melsm.MelsmInputError) as caught:
            fits[one].lrtest(fits[other])
        assert str(caught.value) == f"not nested: {reason}"
    assert nested(fits[small], fits[big]) == (False, reason)


def test_equal_sizes_not_nested(fits):
    """mean ~ week against mean ~ endog: once 'chi2(1) = 0.00, p = 1.0000'."""
    week, endog = fits["week"], fits["endog_only"]
    assert week.n_params == endog.n_params == 4
    with pytest.raises(melsm.MelsmInputError, match=r"^not nested: neither model restricts the other .*'week'"):
        week.lrtest(endog)
    with pytest.raises(melsm.MelsmInputError, match="same number of parameters: the same model"):
        fits["constant"].lrtest(fits["dummies"])  # one model, two codings


# ---- nested pairs: the statistic and its reference distribution ---------------------------
@pytest.mark.parametrize("small, big, df, distribution", [
    ("constant", "function", 1, "χ²(1)"),          # constant σ_u in log σ²_u = κ0 + κ1 endog
    ("week", "dummies", 1, "χ²(1)"),               # the intercept in the span of C(endog)'s columns
    ("week", "function_small", 1, "χ²(1)"),
    ("none", "correlated", 1, "χ²(1)"),            # the correlation at 0
    ("correlated", "quadratic", 1, "χ²(1)"),       # τ_q = 0
    ("none", "quadratic", 2, "χ²(2)"),
    ("week", "correlated", 3, "χ̄²: ½χ²(2) + ½χ²(3)"),   # adds a random scale effect
    ("week", "none", 2, "χ̄²: ½χ²(1) + ½χ²(2)"),
])
def test_nested_fits_and_their_p_values(fits, small, big, df, distribution):
    a, b = fits[small], fits[big]
    assert nested(a, b) == (True, "")
    test = a.lrtest(b)
    assert test == b.lrtest(a)
    statistic = 2 * (b.loglik - a.loglik)
    assert statistic > 0 and test.statistic == pytest.approx(statistic, abs=1e-12)
    assert test.df == df and test.distribution == distribution
    mixture = distribution.startswith("χ̄²")
    expected = chibar2_p(statistic, df) if mixture else scipy.stats.chi2.sf(statistic, df)
    assert test.p_value == pytest.approx(expected, rel=1e-10)
    assert test.note == ("sd:within:Intercept = 0 is on the boundary" if mixture else "")
    assert f"LR = {statistic:.2f} on {distribution}, p " in str(test)


def test_numbers_of_the_riesby_tests(fits):
    test = fits["constant"].lrtest(fits["function"])
    assert test.statistic == pytest.approx(0.941, abs=1e-3) and test.p_value == pytest.approx(0.332, abs=1e-3)
    test = fits["week"].lrtest(fits["correlated"])
    assert test.statistic == pytest.approx(35.25, abs=0.01)
    assert test.p_value == pytest.approx(0.5 * (scipy.stats.chi2.sf(35.25, 2) + scipy.stats.chi2.sf(35.25, 3)),
                                         rel=1e-3)
    assert test.distribution_ascii == "chibar2: 0.5*chi2(2) + 0.5*chi2(3)"
    assert fits["none"].lrtest(fits["correlated"]).distribution_ascii == "chi2(1)"


# ---- the larger fit that did not find its maximum -----------------------------------------
def test_a_larger_fit_with_a_lower_loglik_warns(fits, monkeypatch):
    small, big = fits["constant"], fits["function"]
    monkeypatch.setattr(big, "loglik", small.loglik - 0.5)
    with pytest.warns(melsm.MelsmFitWarning, match="full fit did not find its maximum"):
        test = small.lrtest(big)
    assert test.statistic == 0.0 and test.p_value == 1.0
    assert test.note.startswith("UNRELIABLE: the full fit's log-likelihood is 0.5 below the restricted fit's")
    assert "did not find its maximum" in str(test)
    # within the optimiser's accuracy (1e-6) it is a tie, not a failure
    monkeypatch.setattr(big, "loglik", small.loglik - 5e-7)
    with warnings.catch_warnings():
        warnings.simplefilter("error", melsm.MelsmFitWarning)
        test = small.lrtest(big)
    assert test.statistic == 0.0 and test.note == ""


def test_a_larger_fit_stopped_after_one_iteration_warns(fits, reisby):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", melsm.MelsmConvergenceWarning)
        # one iteration from θ = (β 20, -2; α 2, 0; log SDs and correlation 0)
        early = melsm.Model(data=reisby, **RIESBY["correlated"]).fit(start=[20, -2, 2, 0, 0, 0, 0], max_iter=1)
    small = fits["week"]
    assert not early.converged and early.loglik < small.loglik - 1e-6
    with pytest.warns(melsm.MelsmFitWarning, match="full fit did not find its maximum"):
        test = small.lrtest(early)
    assert test.statistic == 0.0 and test.p_value == 1.0 and test.df == 3
    assert test.note.startswith("sd:within:Intercept = 0 is on the boundary; UNRELIABLE: the full fit's log-likelihood")
    assert test.note.endswith("UNRELIABLE: the full fit did not converge")


# ---- the check itself, on the models' arrays ---------------------------------------------
def test_rows_response_and_grouping(reisby):
    base = model(reisby, MEAN)
    assert nested(base, model(reisby.sample(frac=1.0, random_state=1), MEAN)) == (True, "")  # rows reordered
    assert nested(base, model(reisby[reisby.week < 5], MEAN)) == (
        False, "the fits use different rows (375 and 317 observations)")
    shifted = reisby.set_axis(reisby.index + 1000)
    assert nested(base, model(shifted, MEAN)) == (
        False, "the fits use the same number of rows (375) but not the same rows")
    assert nested(model(reisby, "endweek ~ 1 + (1 | id)"), base) == (
        False, "the fits are of different responses ('endweek' and 'hamdep')")
    assert nested(base, model(reisby, "hamdep ~ week + (1 | endog)")) == (
        False, "the fits group the rows differently ('id': 66 groups, 'endog': 2)")
    assert nested(model(reisby, "hamdep ~ week"), model(reisby, "hamdep ~ week + (1 | endog)")) == (True, "")


def test_codings_are_recognised_by_their_column_spaces(tutorial):
    one = model(tutorial, "normexam ~ standlrt + C(schgend) + (1 | school)")
    other = model(tutorial, "normexam ~ C(schgend, contr.sum) + standlrt + (1 | school)")
    assert nested(one, other) == nested(other, one) == (True, "")
    poly = model(tutorial, "normexam ~ poly(standlrt, 2) + (1 | school)")
    square = model(tutorial, "normexam ~ standlrt + I(standlrt ** 2) + (1 | school)")
    assert nested(poly, square) == nested(square, poly) == (True, "")
    assert nested(model(tutorial, "normexam ~ standlrt + (1 | school)"),
                  model(tutorial, "normexam ~ 0 + C(schgend) + standlrt + (1 | school)")) == (True, "")
    assert nested(model(tutorial, "normexam ~ standlrt + C(schgend) + (1 | school)"),
                  model(tutorial, "normexam ~ standlrt + girl + (1 | school)")) == (
        False, "the smaller model's mean function has 'C(schgend)[T.2]', which the larger lacks")


def test_random_parts(reisby):
    slope = model(reisby, "hamdep ~ week + (week | id)")
    assert nested(model(reisby, MEAN), slope) == (True, "")
    assert nested(slope, model(reisby, MEAN)) == (
        False, "the smaller model's random location part has 'week', which the larger lacks")


def test_level2_variance_functions(reisby):
    constant, function = model(reisby, MEAN), model(reisby, MEAN, between="~ endog")
    coded = model(reisby, MEAN, between="~ C(endog)")
    assert nested(constant, function) == nested(function, coded) == nested(coded, function) == (True, "")
    assert nested(function, constant) == (
        False, "the smaller model's variance of mean:Intercept is a level-2 function of 'endog'; the larger "
               "model's is constant")
    no_intercept = model(reisby, MEAN, between="~ 0 + endog")
    assert nested(constant, no_intercept) == (
        False, "the smaller model's variance of mean:Intercept is constant; the larger model's level-2 function "
               "of it has no intercept")
    assert nested(no_intercept, function) == (True, "")
    data = reisby.assign(odd=(reisby.id % 2).astype(float))  # another level-2 covariate
    scale = model(data, MEAN, within="~ 1 + (1 | id)", between={"within:Intercept": "~ odd"})
    wider = model(data, MEAN, within="~ 1 + (1 | id)", between={"within:Intercept": "~ endog"})
    assert nested(scale, wider) == (
        False, "the smaller model's level-2 function of the variance of within:Intercept has 'odd', which "
               "the larger model's lacks")
    # a model without the random scale effect is nested in one whose scale variance is a function
    assert nested(model(data, MEAN), scale) == (True, "")


def test_correlation_functions(tutorial):
    mean, within = "normexam ~ standlrt + (1 | school)", "~ 1 + (1 | school)"
    constant = model(tutorial, mean, within)
    function = model(tutorial, mean, within, between={CORR: "~ C(schgend)"})
    none = model(tutorial, mean, within, association="none")
    assert nested(constant, function) == nested(none, function) == nested(none, constant) == (True, "")
    assert nested(function, constant) == (
        False, "the smaller model's correlation of mean:Intercept and within:Intercept is a level-2 function of "
               "'C(schgend)[T.2]'; the larger model's is constant")
    assert nested(constant, none)[1] == ("the smaller model correlates its location and scale effects; the larger "
                                         "fixes those correlations at 0 (association 'none')")


def test_outside_is_relative_to_the_column_norm():
    rng = np.random.default_rng(1)
    span = rng.normal(size=(50, 2)) * [1e-6, 1e6]
    inside = span @ [[3.0], [-2e-12]]
    assert outside(inside, span) is None
    assert outside(np.hstack([inside, rng.normal(size=(50, 1))]), span) == 1
    assert outside(inside, span[:, :0]) == 0


# ---- compare() -----------------------------------------------------------------------------
def test_compare_tests_exactly_the_nested_consecutive_fits(fits):
    order = ["week", "endog", "constant", "function", "dummies"]
    comparison = melsm.compare([fits[k] for k in order], names=order)
    tests = comparison.lrtests
    # week→endog: not nested; endog→constant: not nested (and as many parameters);
    # constant→function: through the level-2 function; function→dummies: the smaller second
    assert list(zip(tests.restricted, tests.full, strict=True)) == [("constant", "function"),
                                                                     ("dummies", "function")]
    expected = fits["constant"].lrtest(fits["function"])
    row = tests.iloc[0]
    assert (row.statistic, row.df, row.distribution, row.p) == (expected.statistic, 1, "χ²(1)", expected.p_value)
    # the LR tests' table: one row per test, the p-value in a column of its own
    assert f"| function vs constant | {expected.statistic:.2f} | 1 | χ²(1) | " in comparison.to_markdown()
    assert not any(label.startswith("LR") for _, label in comparison.table.index)
    nested_pair = melsm.compare(fits["week"], fits["correlated"]).lrtests.iloc[0]
    assert nested_pair.distribution == "χ̄²: ½χ²(2) + ½χ²(3)"
    assert nested_pair.p == pytest.approx(chibar2_p(nested_pair.statistic, 3), rel=1e-10)
