"""The lab (benchmarks/lab/) on a reduced size: it runs, writes its report, and the directions of the
claims it confirms hold there too; its statistics (bootstrap intervals, verdicts) on known data."""

import os
import re
import sys
from functools import partial

import pytest
import torch
from conftest import PACK_DIR

sys.path.insert(0, os.path.join(PACK_DIR, "benchmarks"))

from lab import run_lab, stats  # noqa: E402
from lab.stats import FAILS, HOLDS, INCONCLUSIVE, Interval, Measure  # noqa: E402

INTERVAL = re.compile(r"-?[\d.e+-]+ \[-?[\d.e+-]+, -?[\d.e+-]+\]")  # `0.979 [0.975, 0.983]`


@pytest.fixture(scope="module")
def quick():
    return run_lab.run(run_lab.QUICK, seed=0)


def claim(results, start: str) -> run_lab.Claim:
    return next(c for c in results.claims if c.text.startswith(start))


def dnp_claim(results, space: str, scale: float) -> run_lab.Claim:
    return next(c for c in results.claims if c.text.startswith(f"{space}: DNP") and c.text.endswith(f"s = {scale:g}"))


@pytest.mark.parametrize("space", list(run_lab.SPACES))
def test_dns_has_the_lowest_adherence(quick, space):
    assert claim(quick, f"{space}: DNS samples have the lowest adherence").holds


@pytest.mark.parametrize("space, scale", [("2-D points", 2.0), ("8x8 noisy images", 2.0), ("8x8 noisy images", 5.0)])
def test_dnp_raises_adherence_over_cfg(quick, space, scale):
    by_method, _ = quick.guidance[space][scale]
    dnp, cfg = run_lab.by_prefix(by_method, "DNP"), run_lab.by_prefix(by_method, "CFG static")
    assert dnp["posterior"].estimate > cfg["posterior"].estimate
    assert dnp_claim(quick, space, scale).holds


@pytest.mark.parametrize("space", list(run_lab.SPACES))
def test_an_increasing_schedule_keeps_more_modes_than_static(quick, space):
    assert claim(quick, f"{space}: an increasing schedule keeps more").holds


def test_loss_guidance_lowers_the_loss_and_polyak_beats_the_fixed_step(quick):
    assert claim(quick, "loss guidance lowers the final loss").holds
    assert claim(quick, "Polyak reaches a lower loss").holds


def test_time_travel_keeps_guided_samples_closer_to_the_data(quick):
    assert claim(quick, "time travel keeps guided samples closer to the data").holds


def test_dns_negative_is_a_class_other_than_the_prompt(quick):
    for by_scale in quick.guidance.values():
        for _, n_star in by_scale.values():
            assert n_star != 0


def test_report_lists_every_claim_and_the_ones_that_fail(quick, tmp_path):
    text = run_lab.markdown(quick, run_lab.QUICK)
    assert all(c.text in text for c in quick.claims)
    assert all(c.verdict in stats.VERDICTS for c in quick.claims)
    for failed in (c for c in quick.claims if not c.holds):
        assert f"- {failed.text}:" in text
    for name, figure in quick.figures.items():
        figure.save(tmp_path / name)
        assert (tmp_path / name).stat().st_size > 1000


def test_shipped_results_come_from_the_current_lab(quick):
    """benchmarks/lab/RESULTS.md is generated; rerun `python benchmarks/lab/run_lab.py` after changes."""
    with open(os.path.join(PACK_DIR, "benchmarks", "lab", "RESULTS.md")) as handle:
        shipped = handle.read()
    claims_table = shipped.split("## Claims")[1].split("##")[0]
    rows = [line for line in claims_table.splitlines() if line.startswith("| ") and not line.startswith("| claim")]
    assert len(rows) == len(quick.claims)
    for name in ("lab_2d_samples.png", "lab_adherence.png", "lab_loss_guidance.png"):
        assert os.path.isfile(os.path.join(PACK_DIR, "benchmarks", "lab", name))


# ---------------------------------------------------------------- the statistics on known data


def normal_measure(count: int, mean: float = 0.3, seed: int = 1, noise: tuple = ("a",)) -> Measure:
    values = mean + torch.randn(count, generator=torch.Generator().manual_seed(seed))
    return Measure(values, stats.mean, noise + (count,))


def width(interval: Interval) -> float:
    return interval.high - interval.low


def test_bootstrap_interval_covers_the_true_mean_with_the_normal_width():
    measure = normal_measure(20000)
    interval = measure.interval()
    assert interval.estimate == pytest.approx(float(measure.values.double().mean()), abs=1e-12)
    assert interval.low < 0.3 < interval.high
    assert interval.low < interval.estimate < interval.high
    assert width(interval) == pytest.approx(2 * 1.96 / 20000**0.5, rel=0.15)


def test_bootstrap_interval_narrows_with_the_sample_count():
    small, large = normal_measure(100).interval(), normal_measure(10000).interval()
    assert width(large) < width(small) / 5  # 1/sqrt(n): ten times narrower, give or take


def test_bootstrap_is_reproducible():
    assert normal_measure(500).interval() == normal_measure(500).interval()


def test_paired_difference_is_narrower_than_independent():
    base = torch.randn(2000, generator=torch.Generator().manual_seed(2))
    shifted = base + 0.1 + 0.01 * torch.randn(2000, generator=torch.Generator().manual_seed(3))
    paired = stats.difference(Measure(shifted, stats.mean, ("same",)), Measure(base, stats.mean, ("same",)))
    independent = stats.difference(Measure(shifted, stats.mean, ("one",)), Measure(base, stats.mean, ("other",)))
    assert paired.estimate == pytest.approx(0.1, abs=0.002) == independent.estimate
    assert paired.low > 0.09 and paired.high < 0.11
    assert independent.low < 0.05 and width(independent) > 10 * width(paired)
    same = Measure(base, stats.mean, ("same",))
    assert stats.difference(same, same) == Interval(0.0, 0.0, 0.0)


@pytest.mark.parametrize(
    "interval, threshold, expected",
    [
        (Interval(1.0, 0.5, 1.5), 0.0, HOLDS),
        (Interval(-1.0, -1.5, -0.5), 0.0, FAILS),
        (Interval(0.1, -0.2, 0.4), 0.0, INCONCLUSIVE),
        (Interval(0.0, 0.0, 0.0), 0.0, INCONCLUSIVE),  # a tie is not a rise
        (Interval(-0.005, -0.008, -0.002), -0.01, HOLDS),  # worse, but within the tolerance
        (Interval(-0.05, -0.06, -0.04), -0.01, FAILS),
        (Interval(-0.01, -0.02, 0.0), -0.01, INCONCLUSIVE),
    ],
)
def test_verdict_reads_the_interval_against_the_threshold(interval, threshold, expected):
    assert stats.verdict(interval, threshold) == expected


def test_effective_modes_counts_only_labelled_samples():
    modes = partial(stats.effective_modes, modes=4)
    assert float(modes(torch.tensor([0, 1, 2, 3] * 5))) == pytest.approx(4.0)
    assert float(modes(torch.tensor([2] * 7 + [-1] * 9))) == pytest.approx(1.0)
    assert float(modes(torch.full((6,), -1))) == 0.0
    assert float(modes(torch.tensor([0, 0, 1, 1, -1]))) == pytest.approx(2.0)
    batched = modes(torch.tensor([[0, 1, 2, 3], [1, 1, 1, -1]]))
    assert batched.shape == (2,) and batched.tolist() == pytest.approx([4.0, 1.0])


def test_median_is_the_lower_median_per_row():
    values = torch.tensor([[3.0, 1.0, 2.0, 10.0], [5.0, 5.0, 0.0, 1.0]])
    assert stats.median(values).tolist() == [2.0, 1.0]


def test_interval_shows_estimate_and_bounds():
    assert Interval(0.979, 0.975, 0.983).show() == "0.979 [0.975, 0.983]"
    assert Interval(0.118, 0.114, 0.121).show(signed=True) == "+0.118 [0.114, 0.121]"
    assert Interval(1.2e-4, 8.1e-5, 1.6e-4).show(signed=True) == "+0.00012 [8.1e-05, 0.00016]"  # not +0.000


# ---------------------------------------------------------------- the statistics in the lab's report


def test_claims_carry_paired_difference_intervals(quick):
    by_method, _ = quick.guidance["2-D points"][2.0]
    dnp, cfg = run_lab.by_prefix(by_method, "DNP")["posterior"], run_lab.by_prefix(by_method, "CFG static")["posterior"]
    assert dnp.noise == cfg.noise  # the same initial noise: paired
    tested = dnp_claim(quick, "2-D points", 2.0)
    assert tested.difference.estimate == pytest.approx(dnp.estimate - cfg.estimate)
    assert tested.difference.low < tested.difference.estimate < tested.difference.high
    assert tested.verdict == stats.verdict(tested.difference, tested.threshold)


def test_keeps_claims_use_the_stated_tolerances(quick):
    adherence = claim(quick, "2-D points: an increasing schedule keeps the adherence")
    augmentation = claim(quick, "random augmentation keeps samples at least as close")
    assert adherence.threshold == -run_lab.ADHERENCE_TOLERANCE < 0
    assert augmentation.threshold == -run_lab.DISTANCE_TOLERANCE < 0
    text = run_lab.markdown(quick, run_lab.QUICK)
    assert f"adherence at most {run_lab.ADHERENCE_TOLERANCE:g} lower" in text
    assert f"distance to the data at most {run_lab.DISTANCE_TOLERANCE:g} higher" in text


def test_report_heading_counts_the_verdicts(quick):
    text = run_lab.markdown(quick, run_lab.QUICK)
    counts = run_lab.verdict_counts(quick.claims)
    assert sum(counts.values()) == len(quick.claims)
    heading = (
        f"## Claims ({counts[HOLDS]} of {len(quick.claims)} hold, {counts[FAILS]} fail, "
        f"{counts[INCONCLUSIVE]} inconclusive)"
    )
    assert heading in text


def table_rows(text: str, after: str) -> list:
    section = text.split(after, 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("|---")][1:]


@pytest.mark.parametrize(
    "section", ["## Claims", "## DNS, DNP and CFG schedules", "## Loss guidance", "## Gradient path"]
)
def test_every_table_row_of_the_report_carries_intervals(quick, section):
    rows = table_rows(run_lab.markdown(quick, run_lab.QUICK), section)
    assert rows
    for row in rows:
        if not row.startswith(("| s |", "| method |", "| step rule |", "| variant |", "| gradient |")):
            assert INTERVAL.search(row), row


def test_report_states_the_real_sample_count_of_each_section(quick):
    text = run_lab.markdown(quick, run_lab.QUICK)
    size = run_lab.QUICK
    assert size.count != size.loss_count
    assert f"Samples per method: {size.count} in the DNS, DNP and CFG section, {size.loss_count} in" in text
    assert text.count(f"; {size.count} samples per method)") == len(run_lab.SPACES)
    assert f"cfg {run_lab.LOSS_CFG:g}, {size.loss_count} samples" in text
    assert all(m.count == size.loss_count for m in run_lab._measures(quick.loss_grid))
    assert all(m.count == size.count for m in run_lab._measures(quick.guidance))


def test_x0_estimate_gradient_is_weaker_at_equal_scale_and_compared_at_its_own(quick):
    pairs = run_lab.gradient_pairs(quick)
    x0, full = pairs["equal scale"]
    assert stats.verdict(stats.difference(x0["loss"], full["loss"])) == HOLDS  # x0's loss is higher
    own, _ = pairs["each at its chosen scale"]
    assert own is quick.x0_grid[("polyak", quick.chosen["x0 polyak"])]
    section = run_lab.markdown(quick, run_lab.QUICK).split("## Gradient path")[1].split("\n## ")[0]
    assert "equal scale |" in section and "each at its chosen scale |" in section
    assert "times;" in section  # the loss ratio, with its interval


def test_explanations_appear_only_where_the_numbers_show_the_effect(quick):
    text = run_lab.markdown(quick, run_lab.QUICK)
    variants = quick.loss_variants
    augmented = stats.difference(variants[run_lab.AUGMENTED]["loss"], variants[run_lab.POLYAK_PLAIN]["loss"])
    explained = "A likely reason augmentation raises the loss" in text
    assert explained == (stats.verdict(augmented) == HOLDS)


def test_shipped_results_carry_intervals_and_verdict_counts():
    with open(os.path.join(PACK_DIR, "benchmarks", "lab", "RESULTS.md")) as handle:
        shipped = handle.read()
    heading = re.search(r"## Claims \((\d+) of (\d+) hold, (\d+) fail, (\d+) inconclusive\)", shipped)
    held, total, failed, open_ = map(int, heading.groups())
    assert held + failed + open_ == total
    rows = table_rows(shipped, "## Claims")
    verdicts = [row.split(" | ")[1].strip("*") for row in rows]
    assert (verdicts.count(HOLDS), verdicts.count(FAILS), verdicts.count(INCONCLUSIVE)) == (held, failed, open_)
    assert all(INTERVAL.search(row) for row in rows)
