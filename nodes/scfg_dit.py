"""S-CFG on DiTs: where each family keeps its text and image tokens, which blocks S-CFG reads, and the
capture of their attention probabilities through ComfyUI's attention override.

The capture re-implements no block. An APPLY_MODEL wrapper (one per model call) notes the image token
grid (latent H, W over the patch size), the text length and its padding, then puts an attention
override into that call's transformer_options, chained to whatever override is already there (other
packs set the same slot for their attention kernels), and puts the previous one back afterwards. The
override counts the family's joint-attention calls (text and image tokens in one sequence: SD3,
Flux, Chroma, Qwen-Image, Lumina2, Z-Image, AuraFlow) or text cross-attention calls (Wan, Cosmos
Predict2) in the order the model makes them, so block i is the i-th such call of a forward on every
ComfyUI version (Flux: the double blocks, then the single blocks); at the chosen blocks it reads
the probabilities (guidance/attention_maps.py) and hands the result to the real kernel unchanged.
"""

import dataclasses
import re
from typing import Optional

import comfy.patcher_extension
import torch

from ..guidance import attention_maps, scfg
from .families import model_family
from .patching import RUN_KEY
from .scfg_capture import CAPTURE_KEY, ScfgCollector, passes

OVERRIDE = "optimized_attention_override"
WRAPPER_KEY = "dnp_guidance_scfg"
JOINT, CROSS = "joint", "cross"
WINDOW = 4  # blocks read by default
REFERENCE_TOKENS = ("auto", "start token", "whole image")


@dataclasses.dataclass(frozen=True)
class DitLayout:
    """How a DiT family lays out its attention for S-CFG.

    kind: JOINT (text and image in one sequence, text first) or CROSS (text cross-attention after an
    image self-attention in each block). blocks: the attribute holding the blocks S-CFG counts;
    extra_blocks: later blocks that make the same kind of call (Flux's single blocks). start_token:
    the text starts with a start token (CLIP's or Gemma's BOS), which then defines the reference
    region. default_at: the centre of the default window as a fraction of depth, or None for the
    last WINDOW blocks. text_prefix / text_multiple: tokens before the text (AuraFlow's registers) and
    the multiple the text is padded to before the image starts (Z-Image: 32).
    """

    family: str
    kind: str
    blocks: str
    start_token: bool
    default_at: Optional[float]
    why: str
    extra_blocks: str = ""
    text_prefix: int = 0
    text_multiple: int = 1

    def depth(self, diffusion_model) -> int:
        return len(getattr(diffusion_model, self.blocks))

    def calls(self, diffusion_model) -> int:
        """How many countable attention calls one forward makes."""
        extra = getattr(diffusion_model, self.extra_blocks, ()) if self.extra_blocks else ()
        return self.depth(diffusion_model) + len(extra)

    def default_blocks(self, diffusion_model) -> tuple:
        depth = self.depth(diffusion_model)
        size = min(WINDOW, depth)
        first = depth - size if self.default_at is None else round(self.default_at * depth) - size // 2
        first = max(0, min(first, depth - size))
        return tuple(range(first, first + size))

    def image_start(self, text_length: int) -> int:
        return self.text_prefix + -(-text_length // self.text_multiple) * self.text_multiple


SEG4DIFF = "middle blocks, as Seg4Diff (Kim et al., NeurIPS 2025) finds best for SD3 (block 9 of 24)"
CONCEPT = "the last double blocks, as ConceptAttention (Helbling et al., 2025) reads Flux (15-18 of 19)"
MIDDLE = "middle blocks (no published choice for this family; judge with S-CFG Regions)"


def dit_layout(model) -> DitLayout:
    """The layout of the MODEL's DiT family; a ValueError naming the supported ones for others."""
    diffusion_model = model.get_model_object("diffusion_model")
    name = type(diffusion_model).__name__
    config = type(getattr(model.model, "model_config", None)).__name__
    if name == "OpenAISignatureMMDITWrapper":
        prefix = int(getattr(diffusion_model, "register_length", 0) or 0)
        return DitLayout("SD3 / SD3.5", JOINT, "joint_blocks", True, 0.4, SEG4DIFF, text_prefix=prefix)
    if name in ("Flux", "Chroma"):
        family = "Chroma" if name == "Chroma" else "Flux"
        return DitLayout(family, JOINT, "double_blocks", False, None, CONCEPT, extra_blocks="single_blocks")
    if name == "QwenImageTransformer2DModel":
        return DitLayout("Qwen-Image", JOINT, "transformer_blocks", False, 0.4, MIDDLE)
    if name == "NextDiT":
        multiple = int(getattr(diffusion_model, "pad_tokens_multiple", None) or 1)
        z_image = config.startswith("ZImage")
        family = "Z-Image" if z_image else "Lumina2"
        return DitLayout(family, JOINT, "layers", not z_image, 0.4, MIDDLE, text_multiple=multiple)
    if name == "MMDiT" and hasattr(diffusion_model, "register_tokens"):
        prefix = diffusion_model.register_tokens.shape[1]
        return DitLayout(
            "AuraFlow", JOINT, "double_layers", False, None, MIDDLE, extra_blocks="single_layers", text_prefix=prefix
        )
    if name == "WanModel":
        return DitLayout("Wan 2.x", CROSS, "blocks", False, 0.4, MIDDLE)
    if name == "MiniTrainDIT":
        return DitLayout("Cosmos Predict2", CROSS, "blocks", False, 0.4, MIDDLE)
    raise ValueError(
        f"S-CFG reads attention maps of UNets (SD1.x, SD2.x, SDXL) and of these DiTs: SD3 / SD3.5, Flux, Chroma, "
        f"Qwen-Image, Lumina2, Z-Image, AuraFlow, Wan 2.x, Cosmos Predict2. This model is {model_family(model)} "
        f"({name}), which S-CFG cannot read. Use S-CFG with one of those families."
    )


def is_auto(layers: str) -> bool:
    """The `layers` text asks for the defaults ('auto', or the UNet's old 'auto (1/4 + 1/8)')."""
    return layers.strip().lower().startswith("auto")


def parse_blocks(spec: str) -> Optional[tuple]:
    """Block indices from '8, 9, 10' or '8-11' (or a mix); None when spec is not an index list."""
    parts = [part.strip() for part in spec.split(",") if part.strip()]
    if not parts or not all(re.fullmatch(r"\d+(\s*-\s*\d+)?", part) for part in parts):
        return None
    indices = []
    for part in parts:
        first, _, last = part.partition("-")
        indices += range(int(first), int(last or first) + 1)
    return tuple(sorted(set(indices)))


def choose_blocks(model, layout: DitLayout, spec: str) -> tuple:
    """The blocks S-CFG reads on a DiT for the `layers` text."""
    diffusion_model = model.get_model_object("diffusion_model")
    total = layout.calls(diffusion_model)
    if is_auto(spec):
        return layout.default_blocks(diffusion_model)
    if spec.strip().lower() == "all":
        return tuple(range(total))
    blocks = parse_blocks(spec)
    if blocks is None:
        raise ValueError(
            f"S-CFG layers = {spec!r}: on a DiT ({layout.family}) give 'auto', 'all' or block indices such as "
            f"'8, 9, 10' or '8-11' (0 to {total - 1}); map sizes such as '1/4' select UNet layers."
        )
    if blocks[-1] >= total:
        raise ValueError(
            f"S-CFG layers = {spec!r}: this {layout.family} model has {total} blocks S-CFG can read (0 to "
            f"{total - 1}); block {blocks[-1]} does not exist."
        )
    return blocks


def reference_from_start_token(layout_start_token: bool, reference_token: str) -> bool:
    """Whether token 0 defines the reference region (else the whole image does)."""
    if reference_token not in REFERENCE_TOKENS:
        raise ValueError(f"S-CFG reference_token = {reference_token!r}: must be one of {', '.join(REFERENCE_TOKENS)}")
    return layout_start_token if reference_token == "auto" else reference_token == "start token"


@dataclasses.dataclass
class ForwardCapture:
    """One model call: where its image and text tokens are and which of its attention calls to read."""

    layout: DitLayout
    blocks: frozenset
    grid: tuple  # image token grid (h, w)
    text_length: int
    valid: torch.Tensor  # (B, T) bool: the text tokens that may own a region (not padding)
    cond_or_uncond: list
    collector: ScfgCollector
    completion: str
    self_completion: bool
    start_token: bool
    counted: int = 0  # joint or cross calls so far
    self_calls: int = 0  # image self-attention calls so far (CROSS layouts)
    pending_self: Optional[torch.Tensor] = None

    @property
    def image_tokens(self) -> int:
        return self.grid[0] * self.grid[1]

    def observe(self, q, k, heads: int, skip_reshape: bool, mask) -> None:
        query_length, key_length = (q.shape[2], k.shape[2]) if skip_reshape else (q.shape[1], k.shape[1])
        n = self.image_tokens
        if self.layout.kind == JOINT:
            start = self.layout.image_start(self.text_length)
            if query_length == key_length and query_length >= start + n:
                block, self.counted = self.counted, self.counted + 1
                if block in self.blocks:
                    text = (self.layout.text_prefix, self.text_length)
                    maps = attention_maps.probabilities(
                        q, k, heads, (start, self.grid), text, self.self_completion, skip_reshape, mask
                    )
                    self.add(*maps)
            return
        if query_length == key_length == n:  # the block's image self-attention, before its cross-attention
            block, self.self_calls = self.self_calls, self.self_calls + 1
            if block in self.blocks and self.self_completion:
                self.pending_self = attention_maps.probabilities(
                    q, k, heads, (0, self.grid), None, True, skip_reshape, mask
                )[1]
        elif query_length == n and key_length == self.text_length:
            block, self.counted = self.counted, self.counted + 1
            if block in self.blocks:
                cross = attention_maps.probabilities(
                    q, k, heads, (0, self.grid), (0, key_length), False, skip_reshape, mask
                )[0]
                self.add(cross, self.pending_self)
            self.pending_self = None

    def add(self, cross: torch.Tensor, self_maps) -> None:
        """Processes one block's maps per pass into the step's collector."""
        grid = attention_maps.pooled_grid(self.grid)
        chunks = zip(passes(cross, self.cond_or_uncond), passes(self.valid, self.cond_or_uncond))
        selfs = passes(self_maps, self.cond_or_uncond) if self_maps is not None else None
        for (pass_index, cross_chunk), (_, valid) in chunks:
            self_chunk = next(selfs)[1] if selfs is not None else None
            layer = scfg.process_layer(
                cross_chunk.reshape(-1, *grid, cross_chunk.shape[-1]),
                self_chunk,
                self.completion,
                valid=valid,
                start_token=self.start_token,
            )
            self.collector.add(pass_index, *layer)


def text_validity(context: torch.Tensor, attention_mask=None) -> torch.Tensor:
    """(B, T) bool: text tokens that are not padding. ComfyUI zeroes the padding of some encoders
    (umT5 for Wan, Pile-T5 for AuraFlow: zero rows) and returns a mask for others (attention_mask)."""
    valid = context.detach().abs().amax(dim=-1) > 0
    if attention_mask is not None and attention_mask.shape[-1] == context.shape[1]:
        valid = valid & attention_mask.reshape(attention_mask.shape[0], -1).to(device=valid.device).bool()
    return valid


def image_grid(x: torch.Tensor, diffusion_model) -> tuple:
    """The image token grid of a latent: (ceil(H / p), ceil(W / p)) with the family's patch size."""
    patch = getattr(diffusion_model, "patch_size", None) or getattr(diffusion_model, "patch_spatial", 2)
    ph, pw = (patch[-2], patch[-1]) if isinstance(patch, (tuple, list)) else (patch, patch)
    return -(-x.shape[-2] // ph), -(-x.shape[-1] // pw)


def chained_override(previous, capture: ForwardCapture):
    """An attention override that reads the chosen calls and then runs `previous` (or the real kernel)."""

    def override(func, *args, **kwargs):
        q, k = args[0], args[1]
        heads = args[3] if len(args) > 3 else kwargs.get("heads", kwargs.get("num_heads"))
        mask = kwargs.get("mask", args[4] if len(args) > 4 else None)
        capture.observe(q, k, heads, bool(kwargs.get("skip_reshape", False)), mask)
        return previous(func, *args, **kwargs) if previous is not None else func(*args, **kwargs)

    return override


def capture_wrapper(layout: DitLayout, blocks: tuple, completion: str, self_completion: bool, start_token: bool):
    """The APPLY_MODEL wrapper that captures the chosen blocks' maps of one model call."""

    def wrapper(executor, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        run = transformer_options.get(RUN_KEY)
        if run is None or c_crossattn is None:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        capture = ForwardCapture(
            layout,
            frozenset(blocks),
            image_grid(x, executor.class_obj.diffusion_model),
            c_crossattn.shape[1],
            text_validity(c_crossattn, kwargs.get("attention_mask")),
            list(transformer_options.get("cond_or_uncond", [0] * x.shape[0])),
            run.captures.setdefault(CAPTURE_KEY, ScfgCollector()),
            completion,
            self_completion,
            start_token,
        )
        had_override = OVERRIDE in transformer_options
        previous = transformer_options.get(OVERRIDE)
        transformer_options[OVERRIDE] = chained_override(previous, capture)
        try:
            return executor(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)
        finally:
            if had_override:
                transformer_options[OVERRIDE] = previous
            else:
                transformer_options.pop(OVERRIDE, None)

    return wrapper


def patch_capture(model, layout: DitLayout, blocks: tuple, completion: str, self_completion: bool, start_token):
    """Registers the capture on a (cloned) MODEL; replaces an earlier S-CFG capture of ours."""
    wrapper = capture_wrapper(layout, blocks, completion, self_completion, start_token)
    model.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY)
    model.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.APPLY_MODEL, WRAPPER_KEY, wrapper)


def check_latent(shape: tuple) -> None:
    """S-CFG reads single images: a video latent must have one frame."""
    if len(shape) == 5 and shape[2] != 1:
        raise ValueError(
            f"S-CFG works on images: this latent has {shape[2]} frames (shape {tuple(shape)}). Use a length of 1 "
            "frame (an image), or leave S-CFG out of video graphs."
        )
