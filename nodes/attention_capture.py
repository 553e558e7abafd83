"""S-CFG's attention capture on a UNet (Shen et al., CVPR 2024, arXiv 2404.05384): which cross-attention
transformers are read, and attn1 / attn2 replacements (modelled on core ComfyUI's comfy_extras/nodes_sag.py)
that hand each layer's head-averaged maps to the collector. Maths in guidance/scfg.py."""

from comfy.ldm.modules.attention import SpatialTransformer, optimized_attention
from comfy.ldm.modules.diffusionmodules.openaimodel import Downsample, UNetModel, Upsample

from ..guidance import scfg
from . import feedback
from .patching import RUN_KEY
from .scfg_capture import CAPTURE_KEY, ScfgCollector, passes

LAYER_CHOICES = {
    "auto (1/4 + 1/8)": (4, 8),
    "1/4 + 1/8": (4, 8),
    "1/4": (4,),
    "1/8": (8,),
    "1/2 + 1/4": (2, 4),
    "all": None,
}


def attention_layers(unet) -> list:
    """[(block_name, block_id, depth_index, ratio)] of every cross-attention transformer of a UNet;
    ratio = latent side / map side (1, 2, 4, 8, ...)."""
    layers, level = [], 0
    for block_id, block in enumerate(unet.input_blocks):
        if any(isinstance(m, Downsample) for m in block):
            level += 1
        layers += _transformers_in(block, "input", block_id, level)
    layers += _transformers_in(unet.middle_block, "middle", 0, level)
    for block_id, block in enumerate(unet.output_blocks):
        layers += _transformers_in(block, "output", block_id, level)
        if any(isinstance(m, Upsample) for m in block):
            level -= 1
    return layers


def _transformers_in(block, name: str, block_id: int, level: int) -> list:
    found = []
    for module in block if block is not None else []:
        if isinstance(module, SpatialTransformer):
            found += [(name, block_id, depth, 2**level) for depth in range(len(module.transformer_blocks))]
    return found


def select_layers(layers: list, choice: str) -> list:
    """The layers of the chosen map sizes; 'auto' falls back to the two coarsest sizes when a UNet
    has no 1/4 or 1/8 layers (small or unusual UNets)."""
    ratios = LAYER_CHOICES[choice]
    available = sorted({ratio for *_, ratio in layers})
    chosen = layers if ratios is None else [layer for layer in layers if layer[3] in ratios]
    if not chosen and choice.startswith("auto"):
        coarsest = available[-2:]
        feedback.show(
            f"S-CFG found no 1/4 or 1/8 attention maps; using the 1/{' and 1/'.join(map(str, coarsest))} ones"
        )
        chosen = [layer for layer in layers if layer[3] in coarsest]
    if not chosen:
        sizes = ", ".join(f"1/{r}" for r in available)
        raise ValueError(f"S-CFG: this UNet has no attention maps at {choice} of the latent side; it has {sizes}.")
    return chosen


def _attention(q, k, v, extra):
    return optimized_attention(q, k, v, extra["n_heads"], attn_precision=extra.get("attn_precision"))


def self_capture(key):
    def attn1(q, k, v, extra):
        run = extra.get(RUN_KEY)
        if run is not None:
            collector = run.captures.setdefault(CAPTURE_KEY, ScfgCollector())
            probs = scfg.head_averaged_probs(q, k, extra["n_heads"])
            for pass_index, chunk in passes(probs, extra["cond_or_uncond"]):
                collector.pending_self[(key, pass_index)] = chunk
        return _attention(q, k, v, extra)

    return attn1


def latent_side(extra: dict, ratio: int) -> tuple:
    """(h, w) of the maps at `ratio`: the latent sides / ratio, rounded up (each downsampling halves a
    side, rounding up)."""
    height, width = extra["original_shape"][-2:]
    return -(-height // ratio), -(-width // ratio)


def map_size(extra: dict, ratio: int) -> tuple:
    """(h, w) of this layer's maps: from the block's activations, or from the latent on ComfyUI
    versions that do not pass activations_shape."""
    if "activations_shape" in extra:
        return tuple(extra["activations_shape"][-2:])
    return latent_side(extra, ratio)


def cross_capture(key, completion: str, self_completion: bool, ratio: int, finest_ratio: int, start_token=True):
    def attn2(q, k, v, extra):
        run = extra.get(RUN_KEY)
        if run is not None:
            collector = run.captures.setdefault(CAPTURE_KEY, ScfgCollector())
            h, w = map_size(extra, ratio)
            finest = latent_side(extra, finest_ratio)  # coarser layers are upsampled to the finest used side
            probs = scfg.head_averaged_probs(q, k, extra["n_heads"])  # (b, h*w, T)
            for pass_index, chunk in passes(probs, extra["cond_or_uncond"]):
                self_attn = collector.pending_self.pop((key, pass_index), None) if self_completion else None
                cross = chunk.reshape(-1, h, w, chunk.shape[-1])
                layer = scfg.process_layer(cross, self_attn, completion, finest, start_token=start_token)
                collector.add(pass_index, *layer)
        return _attention(q, k, v, extra)

    return attn2


def unet_of(model):
    unet = model.get_model_object("diffusion_model")
    if not isinstance(unet, UNetModel) or not getattr(unet, "input_blocks", None):
        raise ValueError(
            f"S-CFG reads the cross-attention maps of a UNet (SD1.x, SD2.x, SDXL); this model's diffusion model is "
            f"{type(unet).__name__} ({type(model.model).__name__}), which has no such maps. Use S-CFG with an "
            "SD1.5 / SD2.x / SDXL checkpoint."
        )
    return unet


def patch_capture(model, layers: list, completion: str, self_completion: bool, start_token: bool = True) -> None:
    replaced = model.model_options.get("transformer_options", {}).get("patches_replace", {})
    finest_ratio = min(ratio for *_, ratio in layers)
    for name, block_id, depth, ratio in layers:
        key = (name, block_id, depth)
        clashes = [
            kind
            for kind in ("attn1", "attn2")
            if key in replaced.get(kind, {}) or (name, block_id) in replaced.get(kind, {})
        ]
        if clashes:
            feedback.warn(
                f"S-CFG replaces another node's {'/'.join(clashes)} patch at {key}; apply S-CFG first to keep both."
            )
        if self_completion:
            model.set_model_attn1_replace(self_capture(key), name, block_id, depth)
        capture = cross_capture(key, completion, self_completion, ratio, finest_ratio, start_token)
        model.set_model_attn2_replace(capture, name, block_id, depth)


def is_unet(model) -> bool:
    return isinstance(model.get_model_object("diffusion_model"), UNetModel)
