"""Run the lab: the papers' claims checked with the pack's guidance code on a model with exact scores.

    . "$(bash scripts/provision.sh)" && python benchmarks/lab/run_lab.py          # ~1 min on 2 CPU cores
    python benchmarks/lab/run_lab.py --quick --out /tmp/lab                        # reduced size (tests)

Writes RESULTS.md and the PNG figures into --out (default: benchmarks/lab/). Needs only torch and
PIL (no ComfyUI): the maths under test is the pack's guidance/ package.
"""

import argparse
import os
import sys
import time
from dataclasses import dataclass, field

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the pack: `import guidance`
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/: `from lab import ...`

from guidance.loss_guidance import THROUGH_DENOISER, X0_ONLY  # noqa: E402
from lab import experiments, plots, stats, toy  # noqa: E402
from lab.experiments import AUGMENTED, POLYAK_PLAIN, TRAVELLED, X0_GRADIENT  # noqa: E402
from lab.stats import FAILS, HOLDS, INCONCLUSIVE, Interval, Measure  # noqa: E402

SCALE = 3.0
SWEEP = (2.0, 3.0, 5.0)
LOSS_CFG = 3.0
LOSS_SCALES = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 0.3, 1.0, 3.0)
ADHERENCE_TOLERANCE = 0.01  # "keeps the adherence": at most this much lower p(c|x)
DISTANCE_TOLERANCE = 0.05  # "at least as close": at most this much further (units of the modes' spread)
SATURATED = 0.999  # p(c|x) intervals wholly above this: adherence saturated
FIGURE_SAMPLES = 12  # samples per row of the loss-guidance figure
COMPARED = (("posterior", "p(c|x)", 3), ("effective_modes", "effective modes", 2), ("off_manifold", "distance", 2))
LOSS_COMPARED = (("loss", "loss", 3), ("off_manifold", "distance", 2), ("target_mode", "in target mode", 2))


@dataclass
class Size:
    count: int
    steps: int
    loss_count: int


FULL, QUICK = Size(count=5000, steps=50, loss_count=1000), Size(count=400, steps=20, loss_count=150)


@dataclass
class Claim:
    """A claim, the difference that tests it (claimed: difference > threshold) and its verdict."""

    text: str
    tested: str  # what the difference is, e.g. "DNP - CFG p(c|x)"
    difference: Interval
    threshold: float
    evidence: str
    digits: int = 3

    @property
    def verdict(self) -> str:
        return stats.verdict(self.difference, self.threshold)

    @property
    def holds(self) -> bool:
        return self.verdict == HOLDS

    def test(self) -> str:
        return f"{self.tested}: {self.difference.show(self.digits, signed=True)}, claimed > {self.threshold:g}"


@dataclass
class LabResults:
    guidance: dict = field(default_factory=dict)  # space -> scale -> (measures by method, n*)
    loss_grid: dict = field(default_factory=dict)  # (rule, scale) -> measures, through the denoiser
    x0_grid: dict = field(default_factory=dict)  # (rule, scale) -> measures, x0-estimate gradient
    loss_variants: dict = field(default_factory=dict)
    variant_seconds: dict = field(default_factory=dict)
    chosen: dict = field(default_factory=dict)
    claims: list = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    seed: int = 0
    seconds: float = 0.0


SPACES = {"2-D points": toy.points_2d, "8x8 noisy images": lambda: toy.images_8x8(spread=2.0)}


def run_guidance_claims(results: LabResults, size: Size, seed: int) -> None:
    for space, build in SPACES.items():
        mixture = build()
        results.guidance[space] = {}
        for scale in SWEEP:
            metrics, samples, n_star = experiments.run_guidance(mixture, scale, size.count, size.steps, seed)
            results.guidance[space][scale] = (metrics, n_star)
            if space == "2-D points" and scale == SCALE:
                results.figures["lab_2d_samples.png"] = plots.scatter_panels(samples, mixture)


def by_prefix(metrics: dict, prefix: str) -> dict:
    return next(value for name, value in metrics.items() if name.startswith(prefix))


def shown(measure: Measure, digits: int = 3) -> str:
    return measure.interval().show(digits)


def versus(metrics_a: dict, metrics_b: dict, compared: tuple = COMPARED) -> str:
    """`p(c|x) 0.979 [..] vs 0.861 [..]; ...` over the compared metrics."""
    return "; ".join(f"{label} {shown(metrics_a[key], d)} vs {shown(metrics_b[key], d)}" for key, label, d in compared)


def side_by_side(key: str, label: str, digits: int, *metrics: dict) -> str:
    return f"{label} " + " / ".join(shown(m[key], digits) for m in metrics)


def lowest_other_gap(metrics: dict) -> Interval:
    """min over the other methods of their adherence, minus DNS's (paired)."""
    dns = by_prefix(metrics, "DNS")["posterior"]
    others = [m["posterior"] for name, m in metrics.items() if not name.startswith("DNS")]
    return stats.compare(lambda d, *o: torch.stack(o).min(dim=0).values - d, dns, *others)


def dns_claim(space: str, metrics: dict) -> Claim:
    dns = by_prefix(metrics, "DNS")["posterior"]
    lowest = min(
        (m["posterior"] for name, m in metrics.items() if not name.startswith("DNS")), key=Measure.estimate.fget
    )
    return Claim(
        f"{space}: DNS samples have the lowest adherence of all methods (s = {SCALE:g})",
        "lowest other p(c|x) - DNS",
        lowest_other_gap(metrics),
        0.0,
        f"DNS p(c|x) {shown(dns)} vs the lowest other {shown(lowest)}",
    )


def dnp_claim(space: str, scale: float, by_method: dict, n_star: int) -> Claim:
    cfg, dnp = by_prefix(by_method, "CFG static"), by_prefix(by_method, "DNP")
    return Claim(
        f"{space}: DNP (n* = class {n_star}) raises adherence over CFG at s = {scale:g}",
        "DNP - CFG p(c|x)",
        stats.difference(dnp["posterior"], cfg["posterior"]),
        0.0,
        versus(dnp, cfg),
    )


def schedule_claims(space: str, metrics: dict) -> list:
    static, rising, falling = (by_prefix(metrics, p) for p in ("CFG static", "CFG increasing", "CFG decreasing"))
    order = "(increasing / static / decreasing)"
    return [
        Claim(
            f"{space}: an increasing schedule keeps more of the class's modes than static CFG (matched mean s)",
            "increasing - static effective modes",
            stats.difference(rising["effective_modes"], static["effective_modes"]),
            0.0,
            f"{side_by_side('effective_modes', 'effective modes', 2, rising, static, falling)} {order}",
            digits=2,
        ),
        Claim(
            f"{space}: an increasing schedule keeps the adherence of static CFG (matched mean s, "
            f"tolerance {ADHERENCE_TOLERANCE:g})",
            "increasing - static p(c|x)",
            stats.difference(rising["posterior"], static["posterior"]),
            -ADHERENCE_TOLERANCE,
            f"{side_by_side('posterior', 'p(c|x)', 3, rising, static, falling)} {order}",
        ),
    ]


def guidance_claims(results: LabResults) -> list:
    claims = []
    for space, by_scale in results.guidance.items():
        metrics, _ = by_scale[SCALE]
        claims.append(dns_claim(space, metrics))
        claims += [dnp_claim(space, scale, by_method, n_star) for scale, (by_method, n_star) in by_scale.items()]
        claims += schedule_claims(space, metrics)
    return claims


def run_loss_claims(results: LabResults, size: Size, seed: int) -> None:
    mixture = toy.images_8x8(spread=0.15)
    run = (size.loss_count, size.steps, seed)
    results.loss_grid = experiments.run_loss_grid(mixture, LOSS_CFG, LOSS_SCALES, *run)
    results.x0_grid = experiments.run_loss_grid(mixture, LOSS_CFG, LOSS_SCALES, *run, ("polyak",), X0_ONLY)
    results.chosen = {rule: experiments.best_scale(results.loss_grid, rule) for rule in ("fixed", "polyak")}
    results.chosen["x0 polyak"] = experiments.best_scale(results.x0_grid, "polyak")
    results.loss_variants, results.variant_seconds = experiments.run_loss_variants(
        mixture, LOSS_CFG, results.chosen["polyak"], *run
    )
    results.figures["lab_loss_guidance.png"] = loss_figure(mixture, results, size.steps, seed)


def loss_figure(mixture, results: LabResults, steps: int, seed: int):
    rows = {}
    for label, config in (
        ("no loss guidance", None),
        (f"fixed {results.chosen['fixed']:g}", experiments.loss_config(results.chosen["fixed"], "fixed")),
        (f"polyak {results.chosen['polyak']:g}", experiments.loss_config(results.chosen["polyak"], "polyak")),
        (
            f"polyak {results.chosen['polyak']:g}, x0 estimate",
            experiments.loss_config(results.chosen["polyak"], "polyak", gradient=X0_ONLY),
        ),
    ):
        setting = experiments.loss_setting(mixture, LOSS_CFG, config, label)
        rows[label] = experiments.sample(mixture, setting, FIGURE_SAMPLES, steps, seed)
    return plots.image_rows(rows, FIGURE_SAMPLES)


def guidance_lowers_loss(none: dict, fixed: dict, polyak: dict) -> Interval:
    """unguided loss minus the higher of the two guided losses (paired)."""
    return stats.compare(lambda n, f, p: torch.minimum(n - f, n - p), none["loss"], fixed["loss"], polyak["loss"])


def loss_claims(results: LabResults) -> list:
    grid, chosen, variants = results.loss_grid, results.chosen, results.loss_variants
    none = grid[("none", 0.0)]
    fixed, polyak = grid[("fixed", chosen["fixed"])], grid[("polyak", chosen["polyak"])]
    plain, augmented, travelled = variants[POLYAK_PLAIN], variants[AUGMENTED], variants[TRAVELLED]
    return [
        Claim(
            "loss guidance lowers the final loss",
            "unguided loss - the higher of fixed and Polyak",
            guidance_lowers_loss(none, fixed, polyak),
            0.0,
            f"loss {shown(none['loss'])} unguided, {shown(fixed['loss'])} fixed, {shown(polyak['loss'])} Polyak",
        ),
        Claim(
            "Polyak reaches a lower loss than the fixed step (each at its best on-data scale, equal steps)",
            "fixed - Polyak loss",
            stats.difference(fixed["loss"], polyak["loss"]),
            0.0,
            f"Polyak {chosen['polyak']:g} vs fixed {chosen['fixed']:g}: {versus(polyak, fixed, LOSS_COMPARED)}",
        ),
        Claim(
            f"random augmentation keeps samples at least as close to the data (tolerance {DISTANCE_TOLERANCE:g})",
            "without - with augmentation distance",
            stats.difference(plain["off_manifold"], augmented["off_manifold"]),
            -DISTANCE_TOLERANCE,
            f"with vs without: {versus(augmented, plain, LOSS_COMPARED)}",
            digits=2,
        ),
        Claim(
            "time travel lowers the final loss",
            "without - with time travel loss",
            stats.difference(plain["loss"], travelled["loss"]),
            0.0,
            f"with vs without: {versus(travelled, plain, LOSS_COMPARED)}",
        ),
        Claim(
            "time travel keeps guided samples closer to the data",
            "without - with time travel distance",
            stats.difference(plain["off_manifold"], travelled["off_manifold"]),
            0.0,
            f"with vs without: {versus(travelled, plain, LOSS_COMPARED)}",
            digits=2,
        ),
    ]


def adherence_figure(results: LabResults):
    at_scale = {
        f"{space}: {name}": metrics
        for space, by_scale in results.guidance.items()
        for name, metrics in by_scale[SCALE][0].items()
    }
    return plots.stack_vertically(
        [
            plots.bar_chart(
                f"adherence p(prompt class | x), s = {SCALE:g} (bars: 95 % bootstrap interval)",
                {label: m["posterior"].interval() for label, m in at_scale.items()},
                1.0,
            ),
            plots.bar_chart(
                "diversity: effective number of the prompt class's 4 modes",
                {label: m["effective_modes"].interval() for label, m in at_scale.items()},
                4.0,
            ),
        ]
    )


def bootstrap_every_measure(results: LabResults) -> None:
    """Resample every measure once (cached), so the lab's runtime includes its statistics."""
    for measure in _measures((results.guidance, results.loss_grid, results.x0_grid, results.loss_variants)):
        measure.replicates()


def run(size: Size, seed: int = 0) -> LabResults:
    start = time.perf_counter()
    results = LabResults(seed=seed)
    run_guidance_claims(results, size, seed)
    run_loss_claims(results, size, seed)
    bootstrap_every_measure(results)
    results.claims = guidance_claims(results) + loss_claims(results)
    results.figures["lab_adherence.png"] = adherence_figure(results)
    results.seconds = time.perf_counter() - start
    return results


# ---------------------------------------------------------------- the report


def sample_counts(*sections: dict) -> str:
    """The distinct numbers of samples behind the measures of nested result dicts, e.g. `5000`."""
    counts = sorted({measure.count for measure in _measures(sections)})
    return " or ".join(str(count) for count in counts)


def _measures(value):
    if isinstance(value, Measure):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _measures(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _measures(item)


def verdict_counts(claims: list) -> dict:
    return {verdict: sum(claim.verdict == verdict for claim in claims) for verdict in stats.VERDICTS}


def claims_heading(claims: list) -> str:
    counts = verdict_counts(claims)
    return (
        f"## Claims ({counts[HOLDS]} of {len(claims)} hold, {counts[FAILS]} fail, {counts[INCONCLUSIVE]} inconclusive)"
    )


def claims_table(claims: list) -> list:
    lines = ["| claim | verdict | tested difference, 95 % interval | evidence, 95 % intervals |", "|---|---|---|---|"]
    for c in claims:
        mark = c.verdict if c.holds else f"**{c.verdict}**"
        lines.append(f"| {_cell(c.text)} | {mark} | {_cell(c.test())} | {_cell(c.evidence)} |")
    return lines


def guidance_table(results: LabResults) -> list:
    lines = []
    for space, by_scale in results.guidance.items():
        metrics, n_star = by_scale[SCALE]
        lines += [
            f"### {space}, s = {SCALE:g} (n* = class {n_star}; {sample_counts(by_scale)} samples per method)",
            "",
            "| method | adherence p(c\\|x) | assigned to c | effective modes (of 4) | distance to the data |",
            "|---|---|---|---|---|",
        ]
        for name, m in metrics.items():
            lines.append(
                f"| {name} | {shown(m['posterior'])} | {shown(m['assigned'])} | {shown(m['effective_modes'], 2)} | "
                f"{shown(m['off_manifold'], 2)} |"
            )
        lines += ["", "DNP vs CFG over the scale:", ""] + dnp_sweep_table(by_scale) + [""]
    return lines


def dnp_sweep_table(by_scale: dict) -> list:
    lines = [
        "| s | CFG p(c\\|x) | DNP p(c\\|x) | DNP - CFG p(c\\|x) | CFG modes | DNP modes | DNP - CFG modes |",
        "|---|---|---|---|---|---|---|",
    ]
    for scale, (by_method, _) in by_scale.items():
        cfg, dnp = by_prefix(by_method, "CFG static"), by_prefix(by_method, "DNP")
        adherence = stats.difference(dnp["posterior"], cfg["posterior"])
        modes = stats.difference(dnp["effective_modes"], cfg["effective_modes"])
        lines.append(
            f"| {scale:g} | {shown(cfg['posterior'])} | {shown(dnp['posterior'])} | {adherence.show(3, True)} | "
            f"{shown(cfg['effective_modes'], 2)} | {shown(dnp['effective_modes'], 2)} | {modes.show(2, True)} |"
        )
    return lines


def loss_row(*labels: str, m: dict) -> str:
    """`| labels... | final loss | distance | in the target mode |` with intervals."""
    cells = [*labels, shown(m["loss"]), shown(m["off_manifold"], 2), shown(m["target_mode"], 2)]
    return "| " + " | ".join(cells) + " |"


LOSS_HEADER = [
    "| step rule | scale | final loss | distance to the data | samples in the target mode |",
    "|---|---|---|---|---|",
]


def loss_table(results: LabResults) -> list:
    lines = list(LOSS_HEADER)
    for (rule, scale), m in results.loss_grid.items():
        mark = " (chosen)" if results.chosen.get(rule) == scale else ""
        lines.append(loss_row(rule, f"{scale:g}{mark}", m=m))
    lines += ["", f"At Polyak's chosen scale ({results.chosen['polyak']:g}):", ""]
    lines += ["| variant | final loss | distance to the data | samples in the target mode |", "|---|---|---|---|"]
    for name, m in results.loss_variants.items():
        lines.append(loss_row(name, m=m))
    return lines


def gradient_rows(results: LabResults) -> list:
    """(label, scale, measures, seconds or None) for the two gradient paths."""
    scale, x0_scale = results.chosen["polyak"], results.chosen["x0 polyak"]
    seconds = results.variant_seconds
    return [
        (THROUGH_DENOISER, scale, results.loss_variants[POLYAK_PLAIN], seconds[POLYAK_PLAIN]),
        (X0_ONLY, scale, results.loss_variants[X0_GRADIENT], seconds[X0_GRADIENT]),
        (f"{X0_ONLY}, at its own chosen scale", x0_scale, results.x0_grid[("polyak", x0_scale)], None),
    ]


def gradient_pairs(results: LabResults) -> dict:
    """(x0 estimate, through the denoiser) measures: at the same scale, and each at its own chosen scale."""
    full = results.loss_variants[POLYAK_PLAIN]
    return {
        "equal scale": (results.loss_variants[X0_GRADIENT], full),
        "each at its chosen scale": (results.x0_grid[("polyak", results.chosen["x0 polyak"])], full),
    }


def gradient_section(results: LabResults) -> list:
    lines = [
        "## Gradient path: x0 estimate vs through the denoiser",
        "",
        f"The Loss Guidance node's `gradient` input. Polyak step, cfg {LOSS_CFG:g}, no augmentation, "
        f"{sample_counts(results.loss_variants, results.x0_grid)} samples per setting, "
        f"{pairing(results.loss_variants, results.x0_grid)}; `{THROUGH_DENOISER}` at its chosen scale "
        f"{results.chosen['polyak']:g}, `{X0_ONLY}` at that scale and at its own chosen scale (the same rule over "
        "the same grid, table below).",
        "",
        "| gradient | scale | final loss | distance to the data | samples in the target mode | seconds on the toy |",
        "|---|---|---|---|---|---|",
    ]
    for label, scale, m, seconds in gradient_rows(results):
        timing = f"{seconds:.2f}" if seconds is not None else "-"
        lines.append(f"{loss_row(label, f'{scale:g}', m=m)} {timing} |")
    for name, (x0, full) in gradient_pairs(results).items():
        cells = [stats.difference(x0[key], full[key]).show(digits, True) for key, _, digits in LOSS_COMPARED]
        lines.append(f"| {X0_ONLY} - {THROUGH_DENOISER}, {name} | | " + " | ".join(cells) + " | |")
    lines += ["", gradient_reading(results), "", f"`{X0_ONLY}` (Polyak) over the grid of scales:", ""]
    lines += list(LOSS_HEADER)
    for (rule, scale), m in results.x0_grid.items():
        if rule != "none":
            mark = " (chosen)" if results.chosen["x0 polyak"] == scale else ""
            lines.append(loss_row(rule, f"{scale:g}{mark}", m=m))
    return lines + [""]


def gradient_reading(results: LabResults) -> str:
    sentences = []
    for name, (x0, full) in gradient_pairs(results).items():
        ratio = stats.ratio(x0["loss"], full["loss"])
        sentences.append(
            f"{name.capitalize()}, `{X0_ONLY}` / `{THROUGH_DENOISER}` final loss: {ratio.show(2)} times; "
            f"{described(changes(x0, full, LOSS_COMPARED), LOSS_COMPARED)}."
        )
    seconds = results.variant_seconds
    sentences.append(
        f"The Polyak step's length is eta ||eps|| / ||g||, so one eta gives steps of different length on the two "
        f"paths; each at its chosen scale compares the paths themselves. Cost: through the denoiser, every guided "
        f"evaluation runs the denoiser a second time with autograd on and backpropagates through it "
        f"(`guidance/loss_guidance.py`, `_gradient`); here that took {seconds[POLYAK_PLAIN]:.2f} s vs "
        f"{seconds[X0_GRADIENT]:.2f} s per run, but the toy's denoiser is a closed form, so this understates what "
        f"a backward pass through a UNet costs in time and memory."
    )
    return " ".join(sentences)


def pairing(*sections: dict) -> str:
    """`paired (one initial noise)` if every measure in the sections started from the same noise."""
    keys = {measure.noise for measure in _measures(sections)}
    return "paired (one initial noise)" if len(keys) == 1 else f"resampled independently ({len(keys)} noise draws)"


def markdown(results: LabResults, size: Size) -> str:
    guidance_count, loss_count = sample_counts(results.guidance), sample_counts(results.loss_grid)
    lines = [
        "# Lab results: the papers' claims on a model with exact scores",
        "",
        "Generated by `python benchmarks/lab/run_lab.py` (do not edit by hand). The pack's own guidance",
        "code (`guidance/`: the stack, DNS terms, CFG schedules, loss guidance with its step rules,",
        "augmentations and time travel) samples a conditional Gaussian-mixture model whose conditional and",
        "unconditional denoisers are exact (`benchmarks/lab/toy.py`), with Euler over Karras sigmas.",
        f"Samples per method: {guidance_count} in the DNS, DNP and CFG section, {loss_count} in the loss-guidance",
        f"sections; {size.steps} steps, seed {results.seed}; {results.seconds:.0f} s on this machine.",
        "",
        "Metrics: adherence = mean exact posterior p(prompt class | x) of the final samples; effective modes",
        "= exp(entropy) of how the samples assigned to the prompt class spread over its 4 modes (4 = all",
        "equally, 1 = collapsed); distance to the data = median RMS distance per dimension to the nearest",
        "mode mean, in units of the modes' spread (about 1 for real samples of the data).",
        "",
        f"Statistics: every value is `estimate [low, high]`, a {stats.LEVEL:.0%} percentile bootstrap interval over",
        f"the samples ({stats.RESAMPLES} resamples, bootstrap seed {stats.BOOTSTRAP_SEED}). Methods that start from",
        "the same initial noise, sample by sample, are resampled with the same indices (paired differences), others",
        f"independently: DNS, DNP and CFG {pairing(results.guidance['2-D points'])} in 2-D and "
        f"{pairing(results.guidance['8x8 noisy images'])} in 8x8; loss guidance {pairing(results.loss_grid, results.x0_grid, results.loss_variants)}.",
        "A claim says a difference is above a threshold: it **holds** if the",
        "difference's interval lies wholly above it, **fails** if wholly below, and is **inconclusive** if the",
        'interval contains it. The threshold is 0, except for the "keeps ... at least as" claims, which',
        f"allow a tolerance: adherence at most {ADHERENCE_TOLERANCE:g} lower, distance to the data at most "
        f"{DISTANCE_TOLERANCE:g} higher.",
        "",
        claims_heading(results.claims),
        "",
    ]
    lines += claims_table(results.claims)
    lines += [
        "",
        "## DNS, DNP and CFG schedules",
        "",
        "Prompt = class 0; the empty prompt is the marginal. DNS guides away from the prompt (the pack's",
        "`dns_terms`); DNP uses the class most frequent among the DNS samples as the negative prompt n*;",
        "the schedules are the pack's `linear` (increasing) and `invlinear` (decreasing), whose mean scale",
        "equals the static s.",
        "",
    ]
    lines += guidance_table(results)
    lines += [
        "![2-D samples by method](lab_2d_samples.png)",
        "",
        "![adherence and diversity](lab_adherence.png)",
        "",
        "## Loss guidance",
        "",
        f"8x8 images (spread 0.15), prompt = class 0 (horizontal bars) at cfg {LOSS_CFG:g}, {loss_count} samples",
        "per setting. The loss asks for the class's rarest mode (weight 0.1, the bar in rows 6-7): the pack's",
        "masked reference loss over rows 5-7. Gradient through the exact denoiser (the paper's Eq. 5). Both step",
        "rules run over the same grid of scales; the chosen scale of each is the one with the lowest loss among",
        f"those whose samples stay on the data (distance <= {experiments.ON_MANIFOLD:g}), a rule fixed in",
        "`experiments.best_scale` and applied to the point estimates.",
        "",
    ]
    lines += loss_table(results)
    lines += [
        "",
        f"![loss-guided samples ({FIGURE_SAMPLES} per row)](lab_loss_guidance.png)",
        "",
    ]
    lines += gradient_section(results)
    lines += ["## Where a claim fails or is inconclusive", ""]
    unheld = [claim for claim in results.claims if not claim.holds]
    lines += [f"- {c.text}: {c.verdict}; {c.test()}; {c.evidence}." for c in unheld] or ["- Every claim holds."]
    lines += ["", "## Reading", ""] + reading(results)
    lines += [
        "",
        "The toy is not tuned to make claims hold; its only tuning is that classes overlap (so adherence is",
        "not saturated at 1 for every method) and that modes have unequal weights (so diversity can fall).",
        "",
    ]
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


# ---------------------------------------------------------------- the reading: sentences from the numbers


def change(label: str, difference: Interval, digits: int = 3) -> str:
    """`p(c|x) +0.029 [0.025, 0.033] (higher)`: a difference and the direction its interval shows."""
    word = stats.direction(difference, "higher", "lower", "no clear difference")
    return f"{label} {difference.show(digits, signed=True)} ({word})"


def changes(a: dict, b: dict, compared: tuple) -> dict:
    return {key: stats.difference(a[key], b[key]) for key, _, _ in compared}


def described(differences: dict, compared: tuple) -> str:
    return ", ".join(change(label, differences[key], digits) for key, label, digits in compared)


def dnp_reading(space: str, metrics: dict) -> str:
    dnp, cfg = by_prefix(metrics, "DNP"), by_prefix(metrics, "CFG static")
    differences = changes(dnp, cfg, COMPARED)
    return f"- {space}, s = {SCALE:g}, DNP - CFG: {described(differences, COMPARED)}."


def dnp_distance_reading(results: LabResults) -> list:
    """A hypothesis for DNP's larger distance to the data, stated only where the distance is larger."""
    larger = [
        space
        for space, by_scale in results.guidance.items()
        if stats.verdict(dnp_minus_cfg(by_scale[SCALE][0], "off_manifold")) == HOLDS
    ]
    if not larger:
        return []
    return [
        f"- DNP's distance to the data is larger in {' and '.join(larger)}. A likely cause (not tested here): a "
        "negative class whose prediction never agrees with the prompt's keeps the guidance extrapolating, whereas "
        "the empty prompt's prediction converges to the prompt's once a sample is inside the class."
    ]


def dnp_minus_cfg(metrics: dict, key: str) -> Interval:
    return stats.difference(by_prefix(metrics, "DNP")[key], by_prefix(metrics, "CFG static")[key])


def saturation_reading(results: LabResults) -> list:
    """Where CFG and DNP both saturate adherence and differ by less than the saturation margin."""
    lines, margin = [], 1 - SATURATED
    for space, by_scale in results.guidance.items():
        for scale, (by_method, _) in by_scale.items():
            low = min(by_prefix(by_method, name)["posterior"].interval().low for name in ("CFG static", "DNP"))
            gap = dnp_minus_cfg(by_method, "posterior")
            if low >= SATURATED and max(abs(gap.low), abs(gap.high)) < margin:
                lines.append(
                    f"- {space}, s = {scale:g}: CFG and DNP are both saturated (p(c|x) intervals above {SATURATED:g}) "
                    f"and differ by {gap.show(5, True)}, under {margin:g}: the verdict there ({stats.verdict(gap)}) "
                    "is about a difference of no practical size."
                )
    return lines


def schedule_reading(space: str, metrics: dict) -> str:
    static, rising, falling = (by_prefix(metrics, p) for p in ("CFG static", "CFG increasing", "CFG decreasing"))
    compared = (COMPARED[1], COMPARED[0])
    up, down = changes(rising, static, compared), changes(falling, static, compared)
    text = (
        f"- {space}, schedules vs static CFG at matched mean s: increasing {described(up, compared)}; "
        f"decreasing {described(down, compared)}."
    )
    signs = [stats.verdict(d[key]) for d in (up, down) for key in ("effective_modes", "posterior")]
    if signs in ([HOLDS, FAILS, FAILS, HOLDS], [FAILS, HOLDS, HOLDS, FAILS]):
        text += " So the schedules trade adherence for diversity, in opposite directions."
    return text


def loss_reading(results: LabResults) -> list:
    grid, chosen, variants = results.loss_grid, results.chosen, results.loss_variants
    polyak, fixed = grid[("polyak", chosen["polyak"])], grid[("fixed", chosen["fixed"])]
    plain, augmented, travelled = variants[POLYAK_PLAIN], variants[AUGMENTED], variants[TRAVELLED]
    augmentation = changes(augmented, plain, LOSS_COMPARED)
    text = [
        f"- Polyak - fixed step, each at its chosen scale: {described(changes(polyak, fixed, LOSS_COMPARED), LOSS_COMPARED)}.",
        f"- Time travel x3 - plain Polyak: {described(changes(travelled, plain, LOSS_COMPARED), LOSS_COMPARED)}.",
        f"- 10 random augmentations - plain Polyak: {described(augmentation, LOSS_COMPARED)}.",
    ]
    if stats.verdict(augmentation["loss"]) == HOLDS:
        text[-1] += (
            " A likely reason augmentation raises the loss here: the toy's loss is a plain masked L2 with no "
            "adversarial directions (the problem augmentation addresses in deep networks), so shifting, zooming "
            "and cutting out the 8x8 estimate only blurs the target."
        )
    return text


def reading(results: LabResults) -> list:
    """What the numbers say: every comparison below is computed, with its interval."""
    lines = [dnp_reading(space, by_scale[SCALE][0]) for space, by_scale in results.guidance.items()]
    lines += dnp_distance_reading(results) + saturation_reading(results)
    lines += [schedule_reading(space, by_scale[SCALE][0]) for space, by_scale in results.guidance.items()]
    return lines + loss_reading(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="reduced size (what the tests run)")
    parser.add_argument("--out", default=HERE)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    size = QUICK if args.quick else FULL
    results = run(size, args.seed)
    os.makedirs(args.out, exist_ok=True)
    for name, figure in results.figures.items():
        figure.save(os.path.join(args.out, name))
    report = markdown(results, size)
    with open(os.path.join(args.out, "RESULTS.md"), "w") as handle:
        handle.write(report)
    for claim in results.claims:
        print(f"[{claim.verdict}] {claim.text}: {claim.test()}")
    print(f"wrote {os.path.join(args.out, 'RESULTS.md')}; lab {results.seconds:.0f} s")


if __name__ == "__main__":
    main()
