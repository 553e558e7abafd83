"""Evidence for the default progress source: how tau per step differs between the two sources.

    . "$(bash scripts/provision.sh)" && python benchmarks/progress_sources.py [--steps 20]

For every scheduler of the running ComfyUI, on the tiny SD1.5 checkpoint's model sampling (the same
as every SD1.x / SD2.x / SDXL eps model), it prints:
- the largest gap between tau by sigma position (step k of n -> k / (n - 1)) and tau by timestep
  (1 - t(sigma) / t_max, the model's own time) over the steps of one run;
- the mean scale of the linear schedule (s0 = 7) over the evaluated steps with each source (the
  schedules are normalised so that their mean over tau equals s0);
- split-pass drift: the largest tau gap between a run split after half the steps (two chained
  KSamplerAdvanced passes) and the single run, per source;
- denoise 0.5: the largest gap between the run's tau and the tau of the same sigmas in the full run
  (ComfyUI samples steps / denoise steps and keeps the last ones).
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

import comfy_inprocess  # noqa: E402
import torch  # noqa: E402

S0 = 7.0


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    return parser.parse_args()


def taus(progress, sigmas: torch.Tensor, model_sampling) -> dict:
    """tau per evaluated step, by source, for a run over `sigmas` (last entry = target)."""
    evaluated = sigmas[:-1]
    t = model_sampling.timestep(evaluated)
    t_max = model_sampling.timestep(model_sampling.sigma_max)
    return {
        progress.SIGMA_POSITION: progress.progress_from_sigma_position(evaluated, sigmas),
        progress.TIMESTEP: progress.progress_from_timestep(t.float(), t_max.float()),
    }


def row(env, scheduler: str, steps: int, model_sampling) -> str:
    import comfy.samplers

    progress = env.pack.guidance.progress
    schedules = env.pack.guidance.schedules
    sigmas = comfy.samplers.calculate_sigmas(model_sampling, scheduler, steps).float()
    single = taus(progress, sigmas, model_sampling)
    half = steps // 2
    first, second = taus(progress, sigmas[: half + 1], model_sampling), taus(progress, sigmas[half:], model_sampling)
    full_for_denoise = comfy.samplers.calculate_sigmas(model_sampling, scheduler, 2 * steps).float()
    tail = full_for_denoise[-(steps + 1) :]
    denoise_run, full_run = taus(progress, tail, model_sampling), taus(progress, full_for_denoise, model_sampling)
    cells = [scheduler, f"{(single[progress.SIGMA_POSITION] - single[progress.TIMESTEP]).abs().max():.3f}"]
    for source in progress.SOURCES:
        cells.append(f"{float(schedules.cfg_scale('linear', single[source], S0).mean()):.2f}")
    for source in progress.SOURCES:
        split = torch.cat([first[source], second[source]])
        cells.append(f"{(split - single[source]).abs().max():.3f}")
    for source in progress.SOURCES:
        cells.append(f"{(denoise_run[source] - full_run[source][-steps:]).abs().max():.3f}")
    return "| " + " | ".join(cells) + " |"


def main():
    args = parse_args()
    env = comfy_inprocess.boot(progress_bars=False)
    import comfy.samplers

    model = comfy_inprocess.load_tiny(env).model
    model_sampling = model.get_model_object("model_sampling")
    print(f"{args.steps} steps; sources: sigma position (sp), timestep (ts)")
    print(
        "| scheduler | max gap sp-ts | linear mean sp | linear mean ts | split drift sp | split drift ts "
        "| denoise 0.5 drift sp | denoise 0.5 drift ts |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for scheduler in comfy.samplers.SCHEDULER_NAMES:
        print(row(env, scheduler, args.steps, model_sampling))


if __name__ == "__main__":
    main()
