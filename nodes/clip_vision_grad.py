"""A differentiable copy of the forward of core ComfyUI's CLIPVisionModelProjection (comfy/clip_model.py:
CLIPVision, CLIPEncoder, CLIPLayer), for CLIP Image Loss on a CLIP_VISION input."""

import torch


def comfy_clip_vision_projection(model, pixels: torch.Tensor) -> torch.Tensor:
    """The projected image embedding of ComfyUI's CLIPVisionModelProjection, computed from its own
    submodules with out-of-place residual adds (its CLIPLayer adds in place, which autograd refuses)."""
    from comfy.ldm.modules.attention import optimized_attention_for_device

    vision = model.vision_model
    x = vision.pre_layrnorm(vision.embeddings(pixels))
    attention = optimized_attention_for_device(x.device, mask=False, small_input=True)
    for layer in vision.encoder.layers:
        x = x + layer.self_attn(layer.layer_norm1(x), None, attention)
        x = x + layer.mlp(layer.layer_norm2(x))
    return model.visual_projection(vision.post_layernorm(x[:, 0, :]))
