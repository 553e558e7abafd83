"""Per-image conditioning: stack B one-prompt CONDITIONINGs into one whose batch index i is prompt i.

ComfyUI repeats a conditioning of batch 1 over the latent batch and leaves one of batch B as it is
(comfy.utils.repeat_to_batch_size in each cond's process_cond), so a stacked conditioning gives image i
of a batch of B its own text. Token sequences of different lengths are repeated to their least common
multiple first, as ComfyUI itself does when it batches conds of different lengths
(comfy/conds.py, CONDCrossAttn.concat: "padding with repeat doesn't change result"), with the same
limit of 4 repeats.
"""

import math

import torch

MAX_REPEATS = 4  # comfy/conds.py CONDCrossAttn.can_concat


class CannotStack(ValueError):
    """The conditionings differ in a way one batched conditioning cannot hold."""


def _repeat_tokens(tensor: torch.Tensor, length: int, target: int) -> torch.Tensor:
    """Repeat dim 1 of `tensor` (a token axis of size `length`) up to `target`."""
    if tensor.ndim < 2 or tensor.shape[1] != length or length == target:
        return tensor
    return tensor.repeat(1, target // length, *([1] * (tensor.ndim - 2)))


def _stack_values(key: str, values: list, lengths: list, target: int):
    first = values[0]
    if not isinstance(first, torch.Tensor):
        if any(value != first for value in values[1:]):
            raise CannotStack(f"their '{key}' settings differ")
        return first
    if not all(isinstance(value, torch.Tensor) and value.shape[0] == 1 for value in values):
        raise CannotStack(f"'{key}' is not one tensor per prompt")
    values = [_repeat_tokens(value, length, target) for value, length in zip(values, lengths)]
    if len({value.shape for value in values}) != 1:
        raise CannotStack(f"their '{key}' tensors have different shapes")
    return torch.cat(values)


def _stack_entries(entries: list) -> list:
    """[[cond (1, T_i, D), options_i], ...] -> [cond (B, T, D), options with tensors stacked]."""
    conds = [cond for cond, _ in entries]
    if any(cond.shape[0] != 1 or cond.shape[2:] != conds[0].shape[2:] for cond in conds):
        raise CannotStack("their encodings have different batch or feature sizes")
    lengths = [cond.shape[1] for cond in conds]
    target = math.lcm(*lengths)
    if target // min(lengths) > MAX_REPEATS:
        raise CannotStack(f"their token lengths {sorted(set(lengths))} are too far apart to repeat to one length")
    stacked = torch.cat([_repeat_tokens(cond, length, target) for cond, length in zip(conds, lengths)])
    options = [extra for _, extra in entries]
    if any(set(extra) != set(options[0]) for extra in options[1:]):
        raise CannotStack("their options differ")
    return [
        stacked,
        {key: _stack_values(key, [extra[key] for extra in options], lengths, target) for key in options[0]},
    ]


def stack_conditionings(conditionings: list) -> list:
    """One CONDITIONING from B conditionings of one text each (entry k of each stacked together).

    Raises CannotStack, saying why, when they differ in more than their texts' encodings."""
    if len({len(conditioning) for conditioning in conditionings}) != 1:
        raise CannotStack("they have different numbers of entries")
    return [_stack_entries(list(entries)) for entries in zip(*conditionings)]
