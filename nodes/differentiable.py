"""Differentiable calls into models that ComfyUI loaded in inference mode."""

import contextlib

import comfy.model_management
import torch


class _Bound(torch.nn.Module):
    """Lets torch.func.functional_call swap the parameters of `module` while `fn` runs."""

    def __init__(self, module: torch.nn.Module, fn):
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, *args):
        return self.fn(*args)


def call_differentiably(module: torch.nn.Module, fn, *args):
    """fn(*args) with gradients flowing to the inputs through `module`.

    ComfyUI loads weights in inference mode, and inference tensors cannot be saved for backward. For
    the duration of the call they are swapped (torch.func.functional_call) for plain copies, which are
    freed with the graph; the module itself is left untouched. Call inside torch.inference_mode(False).
    """
    frozen = {
        f"module.{name}": tensor.clone()
        for name, tensor in list(module.named_parameters()) + list(module.named_buffers())
        if tensor.is_inference()
    }
    if not frozen:
        return fn(*args)
    return torch.func.functional_call(_Bound(module, fn), frozen, args, strict=False)


@contextlib.contextmanager
def differentiable_kernels():
    """ComfyUI's own switch for a differentiable forward pass, on for the duration of the block.

    Newer ComfyUI runs rotary embeddings and RMS norms through fused comfy_kitchen kernels that have
    no backward (flux/math.py, lumina, cosmos predict2), unless `comfy.model_management.in_training`
    is set, as its training node sets it. The flag is restored afterwards; versions without it are
    left as they are.
    """
    if not hasattr(comfy.model_management, "in_training"):
        yield
        return
    before = comfy.model_management.in_training
    comfy.model_management.in_training = True
    try:
        yield
    finally:
        comfy.model_management.in_training = before
