"""The evaluation's statistics against known cases: textbook Wilson intervals, bootstrap
intervals that behave as intervals should, and the paired test's edge cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from videor4.core.statistics import (
    Estimate,
    bootstrap_ci,
    format_estimate,
    format_p,
    mean_ci,
    paired_difference,
    proportion_ci,
    wilson,
)


@pytest.mark.parametrize(
    "successes, n, low, high",
    [  # Wilson score intervals at z = 1.96 (e.g. Newcombe 1998, Table I; any statistics package)
        (0, 10, 0.0, 0.2775),
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (1, 10, 0.0179, 0.4042),
        (81, 263, 0.2553, 0.3662),  # Newcombe's 81/263
    ],
)
def test_wilson_matches_textbook_values(successes, n, low, high):
    e = wilson(successes, n)
    assert e.value == pytest.approx(successes / n) and e.n == n
    assert (e.low, e.high) == (pytest.approx(low, abs=5e-5), pytest.approx(high, abs=5e-5))


def test_wilson_matches_the_closed_formula():
    k, n, z = 57, 150, 1.959963984540054
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z / (1 + z**2 / n) * math.sqrt(p * (1 - p) / n + z**2 / (4 * n**2))
    e = wilson(k, n)
    assert e.low == pytest.approx(centre - half, rel=1e-12) and e.high == pytest.approx(
        centre + half, rel=1e-12
    )
    assert proportion_ci([1.0] * k + [0.0] * (n - k)) == e


def test_proportion_refuses_graded_scores_and_wilson_bad_counts():
    with pytest.raises(ValueError, match="0 or 1"):
        proportion_ci([1.0, 0.5])
    with pytest.raises(ValueError):
        wilson(11, 10)
    assert wilson(0, 0).ci == [0.0, 1.0]
    for n in (3, 7, 18, 263):  # the bounds at 0/n and n/n are exact, not a rounding error away
        assert wilson(0, n).low == 0.0 and wilson(n, n).high == 1.0


def test_bootstrap_interval_contains_the_mean_shrinks_with_n_and_is_seeded():
    rng = np.random.default_rng(1)
    small, large = rng.uniform(size=40), rng.uniform(size=1600)
    a, b = bootstrap_ci(small), bootstrap_ci(large)
    for e, scores in ((a, small), (b, large)):
        assert e.value == pytest.approx(scores.mean()) and e.low < e.value < e.high and e.n == len(scores)
        assert 0.0 <= e.low and e.high <= 1.0
    assert (b.high - b.low) < (a.high - a.low) / 4  # ~1/sqrt(n): 40x the questions, ~6x narrower
    assert bootstrap_ci(small) == a  # fixed seed: the same numbers on every run
    assert bootstrap_ci(small, resamples=500, seed=3) != a
    assert bootstrap_ci([0.7] * 20).ci == [pytest.approx(0.7), pytest.approx(0.7)]  # no spread, no interval


def test_mean_ci_treats_0_1_scores_as_a_proportion():
    assert mean_ci([0.0] * 18) == wilson(0, 18) and mean_ci([1, 0, 1, 1]) == wilson(3, 4)
    assert mean_ci([0.5, 0.25, 1.0]) == bootstrap_ci([0.5, 0.25, 1.0])


def test_paired_difference_of_identical_runs_is_zero_with_p_one():
    scores = [1, 0, 1, 1, 0, 0.5]
    ids = [f"q{i}" for i in range(len(scores))]
    d = paired_difference(scores, scores, ids, ids)
    assert (d.difference, d.low, d.high, d.p_value, d.n) == (0.0, 0.0, 0.0, 1.0, 6)
    assert not d.significant
    assert d.to_dict() == {"diff": 0.0, "ci": [0.0, 0.0], "p": 1.0, "n": 6, "significant": False}


def test_a_clearly_better_run_is_significant_and_its_interval_excludes_zero():
    rng = np.random.default_rng(0)
    b = (rng.uniform(size=200) < 0.3).astype(float)
    a = np.where(rng.uniform(size=200) < 0.5, 1.0, b)  # b's correct answers plus half the rest
    d = paired_difference(a, b)
    assert d.difference == pytest.approx(a.mean() - b.mean()) and d.difference > 0.2
    assert 0.0 < d.low < d.difference < d.high
    assert d.p_value < 0.001 and d.significant and format_p(d.p_value) == "<0.001"
    reverse = paired_difference(b, a)  # two-sided: the same evidence the other way round
    assert reverse.difference == pytest.approx(-d.difference) and reverse.high < 0 and reverse.significant


def test_a_small_noisy_difference_is_not_significant():
    a, b = [1, 0, 1, 0, 1, 0, 1, 0], [0, 1, 1, 0, 1, 0, 0, 0]
    d = paired_difference(a, b)
    assert (
        d.difference == pytest.approx(0.125)
        and d.low <= 0 <= d.high
        and d.p_value > 0.5
        and not d.significant
    )


def test_misaligned_runs_are_refused():
    with pytest.raises(ValueError, match="not aligned by sample id"):
        paired_difference([1, 0], [1, 0], ["q1", "q2"], ["q2", "q1"])
    with pytest.raises(ValueError, match="not aligned by sample id"):
        paired_difference([1, 0], [1, 0], ["q1", "q2"], None)
    with pytest.raises(ValueError, match="2 vs 3"):
        paired_difference([1, 0], [1, 0, 1])
    with pytest.raises(ValueError, match="no questions"):
        paired_difference([], [])


def test_formatting():
    assert format_estimate(Estimate(0.573, 0.481, 0.66, 150)) == "57.3 [48.1, 66.0] (n=150)"
    assert format_estimate(Estimate(0.5, 0.2366, 0.7634, 10), with_n=False) == "50.0 [23.7, 76.3]"
    assert format_p(0.04321) == "0.043" and format_p(1.0) == "1.000"
