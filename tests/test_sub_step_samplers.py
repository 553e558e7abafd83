"""Loss Guidance with time travel on ComfyUI's multi-evaluation samplers (real sampling, tiny SD1.5):
every evaluation gets the step it is really in, so time travel runs once per step and every
evaluation lands on its own step's next sigma."""

import comfy_api_helpers as helpers
import comfy_inprocess
import pytest
import torch

STEPS, REPEATS = 4, 3


def evaluations_in_step(sampler: str, sigmas: list, i: int) -> int:
    """How many times `sampler` evaluates the model in step i (from its ComfyUI source)."""
    last = sigmas[-1]
    to_end = sigmas[i + 1] == last
    if sampler == "euler":
        return 1
    if sampler == "heunpp2":
        return 1 if to_end else (2 if sigmas[i + 2] == last else 3)
    return 1 if to_end else 2  # heun, dpm_2, dpmpp_sde, dpmpp_2s_ancestral: one more unless Euler


def spy_term(comfy, records: list):
    """A term run after loss guidance (same phase, added later) that records what the glue told the stack about each evaluation."""
    stack = comfy.pack.guidance.stack

    def record(state):
        run = state.evaluator.run
        records.append(
            dict(
                sigma=float(state.sigma[0]),
                step_sigma=float(state.sigma_step[0]),
                landing=float(state.sigma_next[0]),
                start=state.evaluator.step_start,
                travelling=run.travelling,
            )
        )
        return state

    return stack.GuidanceTerm("test_spy", stack.PHASE_CORRECTION, record, "spy", requires=(stack.SAMPLER_STEP,))


def travelling_model(comfy, tiny, records: list, calls: list):
    nodes = comfy.pack.nodes.loss_guidance
    red = comfy.pack.nodes.loss_nodes.ColourTargetLoss().build("#FF0000", 1.0)[0]
    settings = {
        **comfy_inprocess.default_settings(nodes.LossGuidance),
        "decoder": "latent preview",
        "augmentations": 0,
        "scale": 0.01,
    }
    settings.update(start=0.0, end=1.0)
    settings.update(time_travel_repeats=REPEATS, time_travel_start=0.0, time_travel_end=1.0)
    model = nodes.LossGuidance().patch(tiny.model, red, **settings)[0]
    model = comfy.pack.nodes.patching.add_guidance_term(model, spy_term(comfy, records))
    model.set_model_unet_function_wrapper(
        lambda apply, args: calls.append(1) or apply(args["input"], args["timestep"], **args["c"])
    )
    return model


def run_sigmas(comfy, tiny, sampler: str) -> list:
    """The sigmas KSampler gives this sampler (DPM-2 drops the penultimate sigma of steps + 1)."""
    import comfy.samplers

    return comfy.samplers.KSampler(tiny.model, STEPS, "cpu", sampler=sampler, scheduler="normal").sigmas.tolist()


SAMPLERS = ["euler", "heun", "heunpp2", "dpm_2", "dpm_2_ancestral", "dpmpp_sde", "dpmpp_2s_ancestral"]


@pytest.fixture(scope="module", params=SAMPLERS)
def run(request, comfy, tiny):
    records, calls = [], []
    model = travelling_model(comfy, tiny, records, calls)
    with torch.inference_mode():
        helpers.ksample(comfy, tiny, model, steps=STEPS, sampler=request.param)
    sigmas = run_sigmas(comfy, tiny, request.param)
    return dict(sampler=request.param, records=records, calls=len(calls), sigmas=sigmas)


def test_time_travel_runs_once_per_step(run):
    own = sum(evaluations_in_step(run["sampler"], run["sigmas"], i) for i in range(STEPS))
    assert sum(record["start"] for record in run["records"]) == STEPS
    assert sum(record["travelling"] for record in run["records"]) == STEPS * (REPEATS - 1)
    assert run["calls"] == own + STEPS * (REPEATS - 1)


def test_every_evaluation_lands_on_its_steps_next_sigma(run):
    sigmas, sampler = run["sigmas"], run["sampler"]
    expected = [(i, k == 0) for i in range(STEPS) for k in range(evaluations_in_step(sampler, sigmas, i))]
    own = [record for record in run["records"] if not record["travelling"]]
    assert [record["start"] for record in own] == [start for _, start in expected]
    assert [record["step_sigma"] for record in own] == pytest.approx([sigmas[i] for i, _ in expected], rel=1e-5)
    assert [record["landing"] for record in own] == pytest.approx([sigmas[i + 1] for i, _ in expected], rel=1e-5)
    for record in run["records"]:  # no evaluation, time travel included, is above its step's sigma
        assert record["sigma"] <= record["step_sigma"] * (1 + 1e-5)
