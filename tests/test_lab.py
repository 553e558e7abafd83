"""The lab (benchmarks/lab/) on a reduced size: it runs, writes its report, and the directions of the
claims it confirms hold there too."""

import os
import sys

import pytest
from conftest import PACK_DIR

sys.path.insert(0, os.path.join(PACK_DIR, "benchmarks"))

from lab import run_lab  # noqa: E402


@pytest.fixture(scope="module")
def quick():
    return run_lab.run(run_lab.QUICK, seed=0)


def claim(results, start: str) -> run_lab.Claim:
    return next(c for c in results.claims if c.text.startswith(start))


@pytest.mark.parametrize("space", list(run_lab.SPACES))
def test_dns_has_the_lowest_adherence(quick, space):
    assert claim(quick, f"{space}: DNS samples have the lowest adherence").holds


@pytest.mark.parametrize("space, scale", [("2-D points", 2.0), ("8x8 noisy images", 2.0), ("8x8 noisy images", 5.0)])
def test_dnp_raises_adherence_over_cfg(quick, space, scale):
    by_method, _ = quick.guidance[space][scale]
    dnp, cfg = run_lab.by_prefix(by_method, "DNP"), run_lab.by_prefix(by_method, "CFG static")
    assert dnp["posterior"] > cfg["posterior"]


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
