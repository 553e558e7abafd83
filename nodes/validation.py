"""Input checks shared by every node of the pack, from the node's own INPUT_TYPES.

ComfyUI checks a widget's type, choices, min and max itself, but NOT for the inputs that the node's
VALIDATE_INPUTS takes as arguments (nor for any input when it takes **kwargs), and a NaN passes its
min / max comparisons. So every node whose inputs need more than that takes them in VALIDATE_INPUTS
and returns `verdict(cls, ...)`, which checks their type, choices, range and finiteness again:

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

Every FLOAT widget is taken this way (for finiteness); the other inputs keep ComfyUI's checks.
A linked input reaches VALIDATE_INPUTS as None, its value being known only when the node runs, so
the node's function checks its values again first, `validation.require_valid(cls, weight=weight)`:
their type and finiteness, not the widget's range (which ComfyUI does not apply to linked values
either).
"""

import math
import numbers
import sys

MAX_LISTED_CHOICES = 20
LINKED_FIX = (
    "A value that comes from another node's output is only checked when the node runs: fix the node that feeds "
    "it, or type the value into the widget."
)


def input_specs(node_cls) -> dict:
    """name -> (type, options) of every required and optional input."""
    types = node_cls.INPUT_TYPES()
    return {**types.get("required", {}), **types.get("optional", {})}


def display_name(node_cls) -> str:
    """The node's name in the UI (its module's NODE_DISPLAY_NAME_MAPPINGS), for messages."""
    module = sys.modules[node_cls.__module__]
    for node_id, cls in getattr(module, "NODE_CLASS_MAPPINGS", {}).items():
        if cls is node_cls:
            return module.NODE_DISPLAY_NAME_MAPPINGS.get(node_id, node_id)
    return node_cls.__name__


def _choice_problem(name: str, value, choices: list) -> str:
    if value in choices:
        return ""
    listed = ", ".join(map(repr, choices)) if len(choices) <= MAX_LISTED_CHOICES else f"the {len(choices)} listed"
    return f"{name} = {value!r}: must be one of {listed}"


def _number_problem(name: str, value, kind: str, options: dict, check_range: bool) -> str:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return f"{name} = {value!r}: must be a number"
    if not math.isfinite(value):
        return f"{name} = {value}: must be a finite number"
    if kind == "INT" and value != int(value):
        return f"{name} = {value}: must be a whole number"
    if not check_range:
        return ""
    if "min" in options and value < options["min"]:
        return f"{name} = {value}: must be at least {options['min']}"
    if "max" in options and value > options["max"]:
        return f"{name} = {value}: must be at most {options['max']}"
    return ""


def value_problem(name: str, value, spec: tuple, check_range: bool = True) -> str:
    """Why `value` does not fit the input spec (type, choices, finite, and min / max), or ''."""
    kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
    if isinstance(kind, list):
        return _choice_problem(name, value, kind)
    if kind in ("INT", "FLOAT"):
        return _number_problem(name, value, kind, options, check_range)
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return f"{name} = {value!r}: must be true or false"
    if kind == "STRING" and not isinstance(value, str):
        return f"{name} = {value!r}: must be text"
    return ""


def input_problems(node_cls, values: dict, check_range: bool = True) -> list:
    """The problems of the given values of the node's inputs; None (a linked input at validation time,
    value not known yet) has none."""
    specs = input_specs(node_cls)
    problems = (
        value_problem(name, value, specs[name], check_range) for name, value in values.items() if value is not None
    )
    return [problem for problem in problems if problem]


def verdict(node_cls, *combination_checks, **values):
    """VALIDATE_INPUTS' answer for these values: True, or the node's name and every problem.

    Each combination_check(values) -> messages runs once every value is known and valid on its own.
    """
    return _joined(node_cls, _all_problems(node_cls, combination_checks, values, check_range=True)) or True


def require_valid(node_cls, *combination_checks, **values) -> None:
    """When the node runs (linked values are known now): ValueError naming the inputs that are not
    finite numbers (or of the wrong type) or break a combination check."""
    message = _joined(node_cls, _all_problems(node_cls, combination_checks, values, check_range=False))
    if message:
        raise ValueError(f"{message}. {LINKED_FIX}")


def _all_problems(node_cls, combination_checks: tuple, values: dict, check_range: bool) -> list:
    problems = input_problems(node_cls, values, check_range)
    if problems or any(value is None for value in values.values()):
        return problems
    return [problem for check in combination_checks for problem in check(values)]


def _joined(node_cls, problems: list) -> str:
    return f"{display_name(node_cls)}: {'; '.join(problems)}" if problems else ""
