"""Bad input: every node's widget values are checked by ComfyUI's real validation (the pack's
VALIDATE_INPUTS where ComfyUI does not check), linked floats when the node runs, over HTTP too."""

import asyncio
import json
import os

import pytest
import torch
from comfy_client import ComfyError, adapt_prompt, output_node_ids, ui_to_api
from conftest import PACK_DIR, TINY_CHECKPOINT

from guidance import losses
from guidance.dns import dns_terms

NAN, INF = float("nan"), float("inf")
NO_CHOICE = "no such choice"
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
LINKED_HINT = "comes from another node's output"


# ---------------------------------------------------------------- helpers


def pack_nodes(comfy) -> dict:
    return comfy.pack.NODE_CLASS_MAPPINGS


def specs_of(comfy, cls) -> dict:
    return comfy.pack.nodes.validation.input_specs(cls)


def options_of(spec) -> dict:
    return spec[1] if len(spec) > 1 else {}


def is_widget(spec) -> bool:
    return isinstance(spec[0], list) or (spec[0] in WIDGET_TYPES and not options_of(spec).get("forceInput"))


def default_of(spec):
    kind, options = spec[0], options_of(spec)
    if isinstance(kind, list):
        return options.get("default", kind[0] if kind else None)
    return options.get("default", "" if kind == "STRING" else 0)


def float_inputs(comfy, cls) -> list:
    """Names of the node's FLOAT widgets (each must be checked by its VALIDATE_INPUTS)."""
    return [name for name, spec in specs_of(comfy, cls).items() if spec[0] == "FLOAT"]


def widget_defaults(comfy, cls) -> dict:
    return {name: default_of(spec) for name, spec in specs_of(comfy, cls).items() if is_widget(spec)}


@pytest.fixture(scope="module")
def registered(comfy):
    """The pack's nodes in ComfyUI's registry, where the server's loader puts them."""
    with pytest.MonkeyPatch.context() as patch:
        for node_id, cls in pack_nodes(comfy).items():
            patch.setitem(comfy.nodes.NODE_CLASS_MAPPINGS, node_id, cls)
        yield comfy


def validation_errors(node_id: str, inputs: dict) -> list:
    """ComfyUI's own validate_inputs on a one-node prompt: 'message | details |' of each error but
    the missing links (the node's MODEL, IMAGE, ... inputs are left unconnected)."""
    import execution

    prompt = {"1": {"class_type": node_id, "inputs": dict(inputs)}}
    _, errors, _ = asyncio.run(execution.validate_inputs("input-checks", prompt, "1", {}))
    return [f"{e['message']} | {e['details']} |" for e in errors if e["type"] != "required_input_missing"]


def bad_cases(name: str, spec) -> list:
    """(bad value, accepted errors) for a widget; an accepted error is the parts one error must contain.
    FLOATs: the pack's message (VALIDATE_INPUTS takes every FLOAT, ComfyUI checks none of them);
    INTs and choices: ComfyUI's own message, or the pack's where VALIDATE_INPUTS takes the input."""
    kind, options = spec[0], options_of(spec)
    if isinstance(kind, list):
        return [(NO_CHOICE, [[f"| {name}: '{NO_CHOICE}' not in"], [f"{name} = '{NO_CHOICE}': must be one of"]])]
    if kind == "FLOAT":
        below, above = float(options["min"]) - 1.0, float(options["max"]) + 1.0
        return [
            (NAN, [[f"{name} = nan: must be a finite number"]]),
            (INF, [[f"{name} = inf: must be a finite number"]]),
            (-INF, [[f"{name} = -inf: must be a finite number"]]),
            (below, [[f"{name} = {below}: must be at least {options['min']}"]]),
            (above, [[f"{name} = {above}: must be at most {options['max']}"]]),
            ("abc", [[f"{name} = 'abc': must be a number"]]),
        ]
    if kind == "INT":
        below, above = options["min"] - 1, options["max"] + 1
        not_converted = "Failed to convert an input value to a INT value"
        return [
            (NAN, [[not_converted, f"| {name}, nan,"]]),
            (INF, [[not_converted, f"| {name}, inf,"]]),
            (below, [[f"Value {below} smaller than min of {options['min']}", f"| {name} |"]]),
            (above, [[f"Value {above} bigger than max of {options['max']}", f"| {name} |"]]),
            ("abc", [[not_converted, f"| {name}, abc,"]]),
        ]
    return []


def refused(errors: list, accepted: list) -> bool:
    return any(all(part in error for part in parts) for parts in accepted for error in errors)


def call_inputs(comfy, cls) -> dict:
    """Arguments for the node's function: widget defaults, None for the required links (the checks
    must come before any use of them)."""
    types = cls.INPUT_TYPES()
    arguments = {name: default_of(spec) if is_widget(spec) else None for name, spec in types["required"].items()}
    arguments.update({name: default_of(spec) for name, spec in types.get("optional", {}).items() if is_widget(spec)})
    return arguments


# ---------------------------------------------------------------- every node, through ComfyUI's validation


def test_default_widget_values_pass_every_node(registered):
    for node_id, cls in pack_nodes(registered).items():
        assert validation_errors(node_id, widget_defaults(registered, cls)) == [], node_id


def test_every_bad_widget_value_is_refused_naming_the_input(registered):
    """NaN, inf, below min, above max, text in a number, a value not in the choices: for every widget of
    every node, one error names the input and says what is wrong (no exception escapes validation)."""
    unrefused, checked = [], set()
    for node_id, cls in pack_nodes(registered).items():
        defaults = widget_defaults(registered, cls)
        for name, spec in specs_of(registered, cls).items():
            for value, accepted in bad_cases(name, spec) if is_widget(spec) else []:
                checked.add((node_id, spec[0] if isinstance(spec[0], str) else "COMBO"))
                errors = validation_errors(node_id, {**defaults, name: value})
                if not refused(errors, accepted):
                    unrefused.append(f"{node_id}.{name} = {value!r}: expected {accepted}, got {errors}")
    assert not unrefused, "\n".join(unrefused)
    assert {kind for _, kind in checked} == {"FLOAT", "INT", "COMBO"}
    without_widgets = {"DNPG_DNSConditioning", "DNPG_PerImageConditioning"}  # conditioning inputs only
    assert {node_id for node_id, _ in checked} == set(pack_nodes(registered)) - without_widgets


def test_nan_passes_comfyui_own_min_max_checks(registered):
    """Why the pack checks FLOATs itself: ComfyUI's min / max comparisons are False for NaN (KSampler's
    cfg has min 0 and max 100)."""
    import nodes

    inputs = {**widget_defaults(registered, nodes.KSampler), "cfg": NAN}
    assert validation_errors("KSampler", inputs) == []


def test_every_float_is_taken_by_validate_inputs(comfy):
    """ComfyUI skips its own checks for exactly these inputs, so verdict must cover them all."""
    import inspect

    for node_id, cls in pack_nodes(comfy).items():
        floats = set(float_inputs(comfy, cls))
        taken = set(inspect.getfullargspec(cls.VALIDATE_INPUTS).args) if hasattr(cls, "VALIDATE_INPUTS") else set()
        assert floats <= taken, f"{node_id}: VALIDATE_INPUTS does not take {sorted(floats - taken)}"


def test_every_node_refuses_a_non_finite_linked_float_when_it_runs(comfy):
    """A linked input is None in VALIDATE_INPUTS; its value is first known in the node's function."""
    wrong, checked = [], set()
    for node_id, cls in pack_nodes(comfy).items():
        for name in float_inputs(comfy, cls):
            for value in (NAN, INF):
                checked.add(node_id)
                expected = f"{name} = {value}: must be a finite number"
                try:
                    getattr(cls(), cls.FUNCTION)(**{**call_inputs(comfy, cls), name: value})
                    wrong.append(f"{node_id}.{name} = {value}: ran")
                except ValueError as error:
                    if expected not in str(error) or LINKED_HINT not in str(error):
                        wrong.append(f"{node_id}.{name} = {value}: {error}")
                except Exception as error:  # the check did not come first
                    wrong.append(f"{node_id}.{name} = {value}: {type(error).__name__}: {error}")
    assert not wrong, "\n".join(wrong)
    assert len(checked) >= 12 and "DNPG_SCFG" in checked


def test_linked_inputs_are_left_to_the_run(comfy):
    assert comfy.pack.nodes.scfg.SCFG.VALIDATE_INPUTS(rate_min=None, rate_max=3.0, scale_cap=15.0, start=0.0, end=1.0)
    assert comfy.pack.nodes.dns.DNSGuidance.VALIDATE_INPUTS(dns_scale=None) is True


# ---------------------------------------------------------------- S-CFG


SCFG_VALUES = dict(rate_min=0.8, rate_max=3.0, scale_cap=15.0, start=0.0, end=1.0)


def scfg_verdict(comfy, **changes):
    return comfy.pack.nodes.scfg.SCFG.VALIDATE_INPUTS(**{**SCFG_VALUES, **changes})


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(rate_min=-0.5), "S-CFG: rate_min = -0.5: must be at least 0.0"),
        (dict(rate_max=1e9), "S-CFG: rate_max = 1000000000.0: must be at most 10.0"),
        (dict(rate_min=NAN), "S-CFG: rate_min = nan: must be a finite number"),
        (dict(rate_max=INF), "S-CFG: rate_max = inf: must be a finite number"),
        (dict(rate_min="abc"), "S-CFG: rate_min = 'abc': must be a number"),
        (dict(scale_cap=-1.0), "S-CFG: scale_cap = -1.0: must be at least 0.0"),
        (dict(rate_min=2.0, rate_max=1.0), "S-CFG: rate_min (2.0) must not exceed rate_max (1.0)"),
        (dict(start=0.9, end=0.1), "S-CFG: start (0.9) must not exceed end (0.1)"),
        (dict(rate_min=NAN, end=2.0), "S-CFG: rate_min = nan: must be a finite number; end = 2.0: must be at most 1.0"),
    ],
)
def test_scfg_rates_and_window_are_refused_with_their_values(comfy, changes, message):
    assert scfg_verdict(comfy, **changes) == message


def test_scfg_accepts_valid_settings_and_equal_bounds(comfy):
    assert scfg_verdict(comfy) is True
    assert scfg_verdict(comfy, rate_min=1.0, rate_max=1.0, start=0.5, end=0.5) is True


def test_scfg_refuses_linked_bounds_out_of_order_when_it_runs(comfy):
    node = comfy.pack.nodes.scfg.SCFG
    arguments = {**call_inputs(comfy, node), "rate_min": 2.0, "rate_max": 1.0}
    with pytest.raises(ValueError, match=r"S-CFG: rate_min \(2.0\) must not exceed rate_max \(1.0\)\. A value"):
        node().patch(**arguments)


# ---------------------------------------------------------------- DNS, Loss Guidance and messages


def test_dns_scale_nan_is_an_error_not_the_sampler_cfg(comfy):
    node = comfy.pack.nodes.dns.DNSGuidance
    assert node.VALIDATE_INPUTS(dns_scale=NAN) == "DNS Guidance: dns_scale = nan: must be a finite number"
    with pytest.raises(ValueError, match="DNS Guidance: dns_scale = nan: must be a finite number"):
        node().patch(None, NAN)
    with pytest.raises(ValueError, match="got dns_scale = nan"):
        dns_terms(NAN)


def test_loss_windows_state_their_values(comfy):
    node = comfy.pack.nodes.loss_guidance.LossGuidance
    values = dict(scale=0.05, augmentation_strength=1.0, start=0.9, end=0.1, time_travel_start=0.2)
    assert node.VALIDATE_INPUTS(**values, time_travel_end=0.1) == (
        "Loss Guidance: start (0.9) must not exceed end (0.1); "
        "time_travel_start (0.2) must not exceed time_travel_end (0.1)"
    )
    assert node.VALIDATE_INPUTS(**{**values, "start": 0.0}, time_travel_end=0.7) is True


def test_a_sampling_without_a_known_parameterisation_is_refused_naming_the_supported_ones(comfy):
    """Another pack's model sampling that is neither eps / v, flow nor Cosmos RFLOW."""
    import comfy.model_sampling as model_sampling
    import tiny_models

    class CustomSampling(model_sampling.ModelSamplingDiscreteFlow):
        pass

    model = tiny_models.sd3()
    model.add_object_patch("model_sampling", CustomSampling(model.model.model_config))
    with pytest.raises(ValueError) as error:
        comfy.pack.nodes.loss_guidance.check_model_family(model)
    message = str(error.value)
    assert "this model is SD3 (model type FLOW), whose sampling (CustomSampling)" in message
    assert "SD1.x, SD2.x, SDXL" in message and "Qwen-Image" in message and "Cosmos Predict2" in message
    comfy.pack.nodes.loss_guidance.check_model_family(tiny_models.sd3())  # CONST: supported


def test_latent_reference_size_is_reported_in_pixels():
    reference = losses.reference_target(torch.zeros(1, 4, 8, 16), losses.LATENT)
    with pytest.raises(ValueError) as error:
        losses.check_aspect((reference,), 512, 512, pixels_per_latent=8)
    assert "the reference is 128x64 px (16x8 latent cells) but the image being generated is 512x512 px" in str(
        error.value
    )


# ---------------------------------------------------------------- over HTTP


def workflow_prompt(server, name: str) -> dict:
    with open(os.path.join(PACK_DIR, "workflows", name)) as handle:
        prompt = ui_to_api(json.load(handle), server.object_info)
    return adapt_prompt(prompt, server.object_info, checkpoint=TINY_CHECKPOINT, size=128, steps=2)


def ancestors(prompt: dict, node_id: str) -> set:
    found, pending = set(), [node_id]
    while pending:
        current = pending.pop()
        if current not in found:
            found.add(current)
            pending += [value[0] for value in prompt[current]["inputs"].values() if isinstance(value, list)]
    return found


def through(prompt: dict, class_type: str, object_info: dict) -> tuple:
    """(the prompt cut to the outputs fed by the node of class_type, that node's id)."""
    target = next(node_id for node_id, node in prompt.items() if node["class_type"] == class_type)
    outputs = [out for out in output_node_ids(prompt, object_info) if target in ancestors(prompt, out)]
    kept = set().union(*(ancestors(prompt, out) for out in outputs))
    return {node_id: node for node_id, node in prompt.items() if node_id in kept}, target


@pytest.mark.server
@pytest.mark.parametrize(
    "workflow, class_type, name, value, message",
    [
        ("scfg.json", "DNPG_SCFG", "rate_min", NAN, "rate_min = nan: must be a finite number"),
        ("scfg.json", "DNPG_SCFG", "rate_max", 1e9, "rate_max = 1000000000.0: must be at most 10.0"),
        ("scfg.json", "DNPG_SCFG", "rate_min", -1.0, "rate_min = -1.0: must be at least 0.0"),
        ("scfg.json", "DNPG_SCFG", "rate_min", "abc", "rate_min = 'abc': must be a number"),
        ("dnp_manual.json", "DNPG_DNSGuidance", "dns_scale", NAN, "dns_scale = nan: must be a finite number"),
    ],
)
def test_server_refuses_a_bad_value_naming_the_input(server, workflow, class_type, name, value, message):
    prompt, target = through(workflow_prompt(server, workflow), class_type, server.object_info)
    prompt[target]["inputs"][name] = value
    with pytest.raises(ComfyError) as error:
        server.queue(prompt)
    errors = error.value.details["node_errors"][target]["errors"]
    assert any(message in e["details"] for e in errors), errors
    assert server.get("/system_stats")["system"]  # still serving


@pytest.mark.server
def test_server_refuses_a_linked_nan_when_the_node_runs_and_keeps_serving(server):
    prompt, target = through(workflow_prompt(server, "scfg.json"), "DNPG_SCFG", server.object_info)
    good = json.loads(json.dumps(prompt))
    prompt["nan_source"] = {"class_type": "PrimitiveFloat", "inputs": {"value": NAN}}
    prompt[target]["inputs"]["rate_min"] = ["nan_source", 0]
    with pytest.raises(ComfyError) as error:
        server.run(prompt)
    failure = json.dumps(error.value.details["status"])
    assert "S-CFG: rate_min = nan: must be a finite number" in failure and LINKED_HINT in failure
    assert server.run(good)["outputs"]
