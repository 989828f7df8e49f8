"""Wilson intervals, Holm adjustment and the two-proportion z-test against published values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from campaign_analytics._stats import holm, two_proportion_z_test, wilson_interval
from campaign_analytics.errors import ParameterError


@pytest.mark.parametrize(
    ("successes", "n", "lower", "upper"),
    [
        # Newcombe (1998), Statistics in Medicine 17:857-872, table II, method 3 (Wilson score).
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
        # Textbook values for n = 10.
        (0, 10, 0.0, 0.2775),
        (1, 10, 0.0179, 0.4042),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_interval_matches_published_values(successes: int, n: int, lower: float, upper: float) -> None:
    lo, hi = wilson_interval(successes, n)
    assert round(float(lo), 4) == lower
    assert round(float(hi), 4) == upper


def test_wilson_interval_is_vectorised_and_nan_without_trials() -> None:
    lo, hi = wilson_interval(np.array([0, 5, 0]), np.array([10, 10, 0]))
    assert lo.shape == hi.shape == (3,)
    assert np.isnan(lo[2]) and np.isnan(hi[2])
    assert lo[1] == pytest.approx(1 - hi[1])  # symmetric around one half


def test_wilson_interval_widens_with_confidence() -> None:
    lo95, hi95 = wilson_interval(30, 100, confidence=0.95)
    lo99, hi99 = wilson_interval(30, 100, confidence=0.99)
    assert lo99 < lo95 < 0.3 < hi95 < hi99


@pytest.mark.parametrize(
    ("successes", "n", "confidence", "message"),
    [
        (5, 10, 1.0, "confidence"),
        (-1, 10, 0.95, "non-negative"),
        (11, 10, 0.95, "cannot exceed"),
    ],
)
def test_wilson_interval_rejects_bad_input(successes: int, n: int, confidence: float, message: str) -> None:
    with pytest.raises(ParameterError, match=message):
        wilson_interval(successes, n, confidence)


def test_holm_worked_example() -> None:
    adjusted = holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02])


def test_holm_caps_at_one_and_keeps_nan_out_of_the_family() -> None:
    adjusted = holm([0.5, np.nan, 0.4, 0.01])
    # Three tests in the family: 0.01*3, then max(0.03, 0.4*2), then max(0.8, 0.5*1).
    np.testing.assert_allclose(adjusted, [0.8, np.nan, 0.8, 0.03])
    np.testing.assert_allclose(holm([0.9, 0.8]), [1.0, 1.0])
    assert holm([]).shape == (0,)


def test_holm_rejects_values_outside_zero_one() -> None:
    with pytest.raises(ParameterError, match="between 0 and 1"):
        holm([0.2, 1.5])


def test_two_proportion_z_test_equals_chi_square_without_correction() -> None:
    z, p = two_proportion_z_test(60, 100, 40, 100)
    chi2 = stats.chi2_contingency([[60, 40], [40, 60]], correction=False)
    assert float(z) == pytest.approx(np.sqrt(chi2.statistic))
    assert float(p) == pytest.approx(chi2.pvalue)
    assert float(z) > 0  # a is higher


def test_two_proportion_z_test_handles_degenerate_groups() -> None:
    z, p = two_proportion_z_test([0, 0], [50, 0], [0, 1], [40, 5])
    assert z[0] == 0.0 and p[0] == 1.0  # both rates zero: no difference possible
    assert np.isnan(z[1]) and np.isnan(p[1])  # no trials in a
