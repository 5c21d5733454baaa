"""Uncertainty for the evaluation's numbers: every mean comes with its n and a 95 % interval,
and every "A beats B" with a paired test, because the eval sets are small (tens to a few
hundred questions) and a few points of accuracy are often noise.

- accuracy (0/1 per question): the Wilson score interval, which stays inside [0, 1] and is
  sensible at 0/n and n/n, unlike the normal approximation;
- ANLS (a score in [0, 1]): a percentile bootstrap of the mean (Wilson when every score
  is 0/1, see `mean_ci`);
- A vs B on the same questions: a paired bootstrap of the difference of means for the
  interval, and a sign-flip permutation test for the p-value (see `paired_difference`).

Pure numpy with a fixed seed: the same scores give the same intervals on every run, so
a re-run of the eval stage reproduces its metrics file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Z95 = 1.959963984540054  # the standard normal's 97.5 % quantile
RESAMPLES = 2000
SEED = 0
ALPHA = 0.05
_CHUNK = 1 << 22  # resampled scores held at once (~32 MB of float64): a large set is drawn in slices


@dataclass(frozen=True)
class Estimate:
    """A mean with its 95 % interval and the number of questions behind it."""

    value: float
    low: float
    high: float
    n: int

    @property
    def ci(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class PairedDifference:
    """mean(a) - mean(b) over the same questions, its 95 % interval and a two-sided p-value."""

    difference: float
    low: float
    high: float
    p_value: float
    n: int

    @property
    def significant(self) -> bool:
        """At the 5 % level, by the permutation test (the p-value, not the interval)."""
        return self.p_value < ALPHA

    def to_dict(self) -> dict[str, object]:
        return {
            "diff": self.difference,
            "ci": [self.low, self.high],
            "p": self.p_value,
            "n": self.n,
            "significant": self.significant,
        }


def _scores(values: Sequence[float]) -> np.ndarray:
    scores = np.asarray(values, dtype=np.float64)
    if scores.ndim != 1:
        raise ValueError(f"expected a flat sequence of scores, got shape {scores.shape}")
    return scores


def wilson(successes: float, n: int, z: float = Z95) -> Estimate:
    """The Wilson score interval of the proportion successes / n (n = 0: no information, [0, 1])."""
    if n < 0 or not 0 <= successes <= n:
        raise ValueError(f"wilson: need 0 <= successes <= n, got {successes}/{n}")
    if n == 0:
        return Estimate(0.0, 0.0, 1.0, 0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # exactly 0 at 0/n and 1 at n/n, as in closed form: rounding must not leave the bound a hair off
    low = 0.0 if successes == 0 else float(max(0.0, centre - half))
    high = 1.0 if successes == n else float(min(1.0, centre + half))
    return Estimate(p, low, high, n)


def proportion_ci(scores: Sequence[float]) -> Estimate:
    """Accuracy with its Wilson interval; the scores must be 0/1 (exact match, a letter match)."""
    s = _scores(scores)
    if not np.all((s == 0) | (s == 1)):
        raise ValueError("proportion_ci: scores must be 0 or 1 (use bootstrap_ci for graded scores)")
    return wilson(float(s.sum()), len(s))


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of `resamples` draws with replacement of len(values) items each."""
    n = len(values)
    per_chunk = max(1, _CHUNK // n)
    means = []
    for start in range(0, resamples, per_chunk):
        idx = rng.integers(0, n, size=(min(per_chunk, resamples - start), n))
        means.append(values[idx].mean(axis=1))
    return np.concatenate(means)


def bootstrap_ci(scores: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """The mean of graded scores (ANLS) with a percentile bootstrap 95 % interval."""
    s = _scores(scores)
    if len(s) == 0:
        return Estimate(0.0, 0.0, 1.0, 0)
    if resamples < 1:
        raise ValueError("bootstrap_ci: resamples must be >= 1")
    means = _resampled_means(s, resamples, np.random.default_rng(seed))
    low, high = np.quantile(means, [ALPHA / 2, 1 - ALPHA / 2])
    return Estimate(float(s.mean()), float(low), float(high), len(s))


def mean_ci(scores: Sequence[float], resamples: int = RESAMPLES, seed: int = SEED) -> Estimate:
    """Wilson when every score is 0 or 1 (ANLS of multiple choice, or of all-wrong answers: a
    proportion), else the bootstrap.  A bootstrap of identical scores has zero width, which
    would claim 0/18 is exactly 0; and an ANLS equal to the accuracy gets the same interval."""
    s = _scores(scores)
    if np.all((s == 0) | (s == 1)):
        return wilson(float(s.sum()), len(s))
    return bootstrap_ci(s, resamples, seed)


def paired_difference(
    a: Sequence[float],
    b: Sequence[float],
    ids_a: Sequence[str] | None = None,
    ids_b: Sequence[str] | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> PairedDifference:
    """mean(a) - mean(b) for two runs on the same questions in the same order.

    Pairing removes the between-question variance (hard questions are hard for both), so a
    real gain shows up on far fewer questions than two independent intervals would need.
    The interval is a percentile bootstrap of the per-question differences (questions
    resampled together).  The p-value is the sign-flip permutation test: under "no
    difference" each question's a/b labels are exchangeable, so each difference's sign is
    flipped at random; p = (1 + #{|mean of flipped| >= |observed|}) / (1 + resamples),
    two-sided.  Identical runs give difference 0, interval [0, 0] and p = 1.

    `ids_a` / `ids_b` (the sample ids) are checked equal: a misaligned pair would compare
    different questions and still produce a confident-looking number.
    """
    x, y = _scores(a), _scores(b)
    if ids_a is not None or ids_b is not None:
        if ids_a is None or ids_b is None or list(ids_a) != list(ids_b):
            raise ValueError("paired_difference: the two runs are not aligned by sample id")
    if len(x) != len(y):
        raise ValueError(f"paired_difference: {len(x)} vs {len(y)} scores")
    if len(x) == 0:
        raise ValueError("paired_difference: no questions")
    if resamples < 1:
        raise ValueError("paired_difference: resamples must be >= 1")
    d = x - y
    observed = float(d.mean())
    rng = np.random.default_rng(seed)
    low, high = np.quantile(_resampled_means(d, resamples, rng), [ALPHA / 2, 1 - ALPHA / 2])
    n = len(d)
    per_chunk = max(1, _CHUNK // n)
    extreme = 0
    for start in range(0, resamples, per_chunk):
        signs = rng.choice(np.array([-1.0, 1.0]), size=(min(per_chunk, resamples - start), n))
        flipped = np.abs((signs * d).mean(axis=1))
        extreme += int(np.sum(flipped >= abs(observed) - 1e-12))  # tolerance: float sums of the same values
    p = (1 + extreme) / (1 + resamples)
    return PairedDifference(observed, float(low), float(high), float(min(1.0, p)), n)


def format_estimate(e: Estimate, scale: float = 100.0, digits: int = 1, with_n: bool = True) -> str:
    """ "57.3 [48.1, 66.0] (n=150)": the value and interval in points (scale 100), n optional."""
    text = f"{scale * e.value:.{digits}f} [{scale * e.low:.{digits}f}, {scale * e.high:.{digits}f}]"
    return f"{text} (n={e.n})" if with_n else text


def format_p(p: float) -> str:
    """The p-value to three decimals ("<0.001" below: the resamples cannot resolve more)."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"
