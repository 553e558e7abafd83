"""The lab's statistics: percentile-bootstrap intervals over samples and the verdicts of claims.

A `Measure` is one metric of one method's samples: the per-sample values and the statistic that
summarises them (mean, median, effective modes). Its interval resamples the samples with
replacement (RESAMPLES times, fixed seed) and takes the 2.5 and 97.5 percentiles of the statistic.
Measures whose samples started from the same noise (the same `noise` key: seed, count, shape) are
resampled with the same indices, so differences between them are paired; others are resampled
independently.
"""

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

RESAMPLES = 1000
LEVEL = 0.95
BOOTSTRAP_SEED = 0
HOLDS, FAILS, INCONCLUSIVE = "holds", "fails", "inconclusive"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE)


@dataclass(frozen=True)
class Interval:
    """A point estimate and its bootstrap confidence interval."""

    estimate: float
    low: float
    high: float

    def show(self, digits: int = 3, signed: bool = False) -> str:
        """`0.979 [0.975, 0.983]`; signed puts a + on positive estimates (differences)."""
        return f"{number(self.estimate, digits, signed)} [{number(self.low, digits)}, {number(self.high, digits)}]"

    def excludes(self, value: float) -> bool:
        return not self.low <= value <= self.high


def number(value: float, digits: int = 3, signed: bool = False) -> str:
    """Fixed point; two significant digits for magnitudes too small for it (so a tiny nonzero value
    does not read as 0.000), three for very large ones."""
    sign = "+" if signed else ""
    if abs(value) >= 1e5:
        return f"{value:{sign}.3g}"
    if 0 < abs(value) < 0.5 * 10**-digits:
        return f"{value:{sign}.2g}"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


# ---------------------------------------------------------------- statistics over the last dimension


def mean(values: torch.Tensor) -> torch.Tensor:
    return values.double().mean(dim=-1)


def median(values: torch.Tensor) -> torch.Tensor:
    """The lower median (torch's), as the lab's point estimates always used."""
    return values.median(dim=-1).values.double()


def effective_modes(labels: torch.Tensor, modes: int) -> torch.Tensor:
    """exp(entropy) of the shares of labels 0..modes-1 (-1 = not counted) along the last dimension;
    0 where nothing is counted."""
    rows = labels.reshape(-1, labels.shape[-1])
    offsets = torch.arange(rows.shape[0]).unsqueeze(1) * (modes + 1)
    bins = torch.bincount((rows + 1 + offsets).flatten(), minlength=rows.shape[0] * (modes + 1))
    counts = bins.view(rows.shape[0], modes + 1)[:, 1:].double()
    total = counts.sum(dim=1, keepdim=True)
    shares = counts / total.clamp(min=1)
    entropy = -(shares * shares.clamp(min=1e-12).log()).sum(dim=1)
    return torch.where(total.squeeze(1) > 0, entropy.exp(), torch.zeros_like(entropy)).view(labels.shape[:-1])


# ---------------------------------------------------------------- resampling


@lru_cache(maxsize=8)
def resample_indices(count: int, stream: int = 0, resamples: int = RESAMPLES) -> torch.Tensor:
    """(resamples, count) indices drawn with replacement; one fixed set per (count, stream)."""
    generator = torch.Generator().manual_seed(BOOTSTRAP_SEED + 7919 * stream)
    return torch.randint(count, (resamples, count), generator=generator)


def percentile_interval(estimate: float, replicates: torch.Tensor, level: float = LEVEL) -> Interval:
    tail = (1 - level) / 2
    low, high = torch.quantile(replicates.double(), torch.tensor([tail, 1 - tail], dtype=torch.double)).tolist()
    return Interval(float(estimate), low, high)


@dataclass(eq=False)
class Measure:
    """One metric of one method's samples: per-sample values, their statistic, and the noise they
    started from (equal keys = the same initial noise, sample by sample: paired)."""

    values: torch.Tensor
    statistic: Callable
    noise: tuple
    _replicates: dict = field(default_factory=dict, repr=False)

    @property
    def count(self) -> int:
        return self.values.shape[-1]

    @property
    def estimate(self) -> float:
        return float(self.statistic(self.values))

    def replicates(self, stream: int = 0) -> torch.Tensor:
        """The statistic over each resample of the samples, (RESAMPLES,)."""
        if stream not in self._replicates:
            self._replicates[stream] = self.statistic(self.values[resample_indices(self.count, stream)])
        return self._replicates[stream]

    def interval(self) -> Interval:
        return percentile_interval(self.estimate, self.replicates())


def compare(combine: Callable, *measures: Measure) -> Interval:
    """combine(statistics...) with its interval: measures from the same noise are resampled together
    (paired), measures from different noise independently (each noise key its own stream)."""
    streams = {}
    for measure in measures:
        streams.setdefault(measure.noise, len(streams))
    estimate = combine(*(torch.tensor(m.estimate, dtype=torch.double) for m in measures))
    replicates = combine(*(m.replicates(streams[m.noise]) for m in measures))
    return percentile_interval(float(estimate), replicates)


def difference(a: Measure, b: Measure) -> Interval:
    """a - b with its interval (paired when a and b share their noise)."""
    return compare(torch.sub, a, b)


def ratio(a: Measure, b: Measure) -> Interval:
    """a / b with its interval (paired when a and b share their noise)."""
    return compare(torch.div, a, b)


def verdict(difference: Interval, threshold: float = 0.0) -> str:
    """The claim `difference > threshold`: holds if the whole interval is above the threshold, fails
    if it is wholly below, inconclusive if it contains the threshold."""
    if difference.low > threshold:
        return HOLDS
    if difference.high < threshold:
        return FAILS
    return INCONCLUSIVE


def direction(difference: Interval, up: str, down: str, neither: str) -> str:
    """A word for the sign of a difference, from its interval (neither when it contains 0)."""
    return {HOLDS: up, FAILS: down, INCONCLUSIVE: neither}[verdict(difference)]
