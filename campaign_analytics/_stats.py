"""Small, vectorised statistics for proportions: Wilson intervals, Holm, z-tests.

They work on the aggregated counts (a few rows per group), so they are plain
numpy/scipy and never see the events.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import stats

from campaign_analytics.errors import ParameterError

__all__ = ["holm", "two_proportion_z_test", "wilson_interval"]

ArrayLike = npt.ArrayLike
_FloatArray = npt.NDArray[np.float64]

_DEFAULT_CONFIDENCE: Final[float] = 0.95


def wilson_interval(
    successes: ArrayLike, n: ArrayLike, confidence: float = _DEFAULT_CONFIDENCE
) -> tuple[_FloatArray, _FloatArray]:
    """Wilson score interval of a binomial proportion, element-wise.

    Parameters
    ----------
    successes
        Number of successes (e.g. items read), non-negative.
    n
        Number of trials (e.g. items sent), ``>= successes``.
    confidence
        Two-sided confidence level, strictly between 0 and 1.

    Returns
    -------
    (lower, upper) : tuple of numpy.ndarray
        Float arrays of the broadcast shape; NaN where ``n == 0``.

    Raises
    ------
    ParameterError
        Negative counts, ``successes > n``, or a confidence outside (0, 1).

    Examples
    --------
    >>> lo, hi = wilson_interval([0, 81], [10, 263])
    >>> [round(float(v), 4) for v in (*lo, *hi)]
    [0.0, 0.2553, 0.2775, 0.3662]
    """
    if not 0.0 < confidence < 1.0:
        raise ParameterError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    x = np.asarray(successes, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    _check_counts(x, m)
    z = float(stats.norm.ppf(0.5 + confidence / 2.0))
    z2 = z * z
    with np.errstate(divide="ignore", invalid="ignore"):
        p = x / m
        denominator = 1.0 + z2 / m
        centre = (p + z2 / (2.0 * m)) / denominator
        half = z / denominator * np.sqrt(p * (1.0 - p) / m + z2 / (4.0 * m * m))
        lower = np.clip(centre - half, 0.0, 1.0)
        upper = np.clip(centre + half, 0.0, 1.0)
    empty = m == 0
    # At p = 0 (or 1) the bound is exactly 0 (or 1); keep rounding noise out.
    lower = np.where(x == 0, 0.0, lower)
    upper = np.where(x == m, 1.0, upper)
    lower = np.where(empty, np.nan, lower)
    upper = np.where(empty, np.nan, upper)
    return np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64)


def holm(p_values: ArrayLike) -> _FloatArray:
    """Holm-Bonferroni adjusted p-values (step-down), in the input order.

    NaN p-values are left out of the family and stay NaN.

    Parameters
    ----------
    p_values
        One-dimensional p-values of one family of tests.

    Returns
    -------
    numpy.ndarray
        Adjusted p-values, capped at 1; reject where ``adjusted <= alpha``.

    Examples
    --------
    >>> holm([0.01, 0.04, 0.03, 0.005]).round(4).tolist()
    [0.03, 0.06, 0.06, 0.02]
    """
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ParameterError(f"holm() needs a one-dimensional sequence of p-values, got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ParameterError("p-values must lie between 0 and 1")
    adjusted = np.full(p.shape, np.nan)
    known = np.flatnonzero(~np.isnan(p))
    m = known.size
    if m == 0:
        return adjusted
    order = known[np.argsort(p[known], kind="stable")]
    scaled = (m - np.arange(m)) * p[order]
    adjusted[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    return adjusted


def two_proportion_z_test(
    successes_a: ArrayLike, n_a: ArrayLike, successes_b: ArrayLike, n_b: ArrayLike
) -> tuple[_FloatArray, _FloatArray]:
    """Two-sided z-test of equal proportions with the pooled standard error.

    Equivalent to a chi-square test of the 2x2 table without continuity
    correction (``z**2`` is its statistic).

    Parameters
    ----------
    successes_a, n_a
        Successes and trials of group a.
    successes_b, n_b
        Successes and trials of group b.

    Returns
    -------
    (z, p_value) : tuple of numpy.ndarray
        ``z > 0`` when a's proportion is higher. Where both proportions are
        0 (or both 1) the groups cannot differ: ``z = 0``, ``p = 1``. NaN where
        a group has no trials.

    Examples
    --------
    >>> z, p = two_proportion_z_test(60, 100, 40, 100)
    >>> round(float(z), 4), round(float(p), 4)
    (2.8284, 0.0047)
    """
    xa = np.asarray(successes_a, dtype=np.float64)
    na = np.asarray(n_a, dtype=np.float64)
    xb = np.asarray(successes_b, dtype=np.float64)
    nb = np.asarray(n_b, dtype=np.float64)
    _check_counts(xa, na)
    _check_counts(xb, nb)
    with np.errstate(divide="ignore", invalid="ignore"):
        pooled = (xa + xb) / (na + nb)
        se = np.sqrt(pooled * (1.0 - pooled) * (1.0 / na + 1.0 / nb))
        z = np.where(se > 0, (xa / na - xb / nb) / se, 0.0)
    p = 2.0 * stats.norm.sf(np.abs(z))
    empty = (na == 0) | (nb == 0)
    z = np.where(empty, np.nan, z)
    p = np.where(empty, np.nan, p)
    return np.asarray(z, dtype=np.float64), np.asarray(p, dtype=np.float64)


def _check_counts(successes: _FloatArray, n: _FloatArray) -> None:
    if np.any(successes < 0) or np.any(n < 0):
        raise ParameterError("counts must be non-negative")
    if np.any(successes > n):
        raise ParameterError("successes cannot exceed the number of trials")
