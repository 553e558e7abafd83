"""Input checks for VALIDATE_INPUTS.

ComfyUI skips its own type, range and choice checks for every input that a node's VALIDATE_INPUTS
takes, so a node that validates combinations of inputs must check those again: this does it from
the node's own INPUT_TYPES, so the limits live in one place.
"""

import math


def _specs(node_cls) -> dict:
    types = node_cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def _problem(name: str, value, spec) -> str:
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return "" if value in kind else f"{name} = {value!r} is not one of: {', '.join(map(str, kind))}"
    if kind not in ("INT", "FLOAT"):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        return f"{name} must be a number, got {value!r}"
    if "min" in options and value < options["min"]:
        return f"{name} = {value} is below its minimum {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{name} = {value} is above its maximum {options['max']}"
    return ""


def input_problems(node_cls, values: dict) -> list:
    """Messages for the values that break their input's declared choices or range."""
    specs = _specs(node_cls)
    return [
        message for name, value in values.items() if name in specs and (message := _problem(name, value, specs[name]))
    ]
