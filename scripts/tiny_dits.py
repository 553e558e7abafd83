"""Tiny DiT / flow-matching models of every family the pack supports, built from ComfyUI's own classes.

Each family function builds the family's real `comfy.supported_models` config and `comfy.ldm` network
small, with random weights (`tiny_models.randomise_`), and returns a `TinyDiT`: the ModelPatcher, a
positive and a negative conditioning of the shapes that family's text encoder gives, and a non-square
latent. ComfyUI's own detection (`comfy.model_detection.model_config_from_unet`) is run on every tiny
state dict and its answer kept in `TinyDiT.detected`, so the tests check that the tiny model is the
family it claims to be. Where the detection derives every size from the weights (SD3, Wan) the model is
loaded back through `comfy.sd.load_diffusion_model_state_dict`, the path UNETLoader takes; the other
families' detections hard-code production sizes (Flux: 24 heads of 128, Qwen-Image: 24 heads of 128,
Lumina2: 32 heads), so they are built from the same config class at a small size instead.
"""

import dataclasses

import comfy.model_detection
import comfy.model_patcher
import comfy.sd
import comfy.supported_models
import tiny_models
import torch

HEIGHT, WIDTH = 8, 12  # latent size: non-square on purpose
TOKENS = 7


@dataclasses.dataclass
class TinyDiT:
    name: str
    patcher: comfy.model_patcher.ModelPatcher
    positive: list
    negative: list
    latent: torch.Tensor
    detected: str  # the supported_models class ComfyUI's detection names for these weights
    expected: str  # the class this family is


def _generator(name: str) -> torch.Generator:
    return torch.Generator().manual_seed(sum(map(ord, name)))


def _detected(diffusion_model: torch.nn.Module) -> str:
    config = comfy.model_detection.model_config_from_unet(diffusion_model.state_dict(), "")
    return type(config).__name__ if config is not None else "none"


def _built(config, generator):
    """A small model from `config` (a supported_models instance) and the detection's name for it."""
    patcher = tiny_models.patcher(config, generator)
    return patcher, _detected(patcher.model.diffusion_model)


def _loaded(name, config, generator):
    """Built, then its state dict loaded back through ComfyUI's UNETLoader path (real detection)."""
    built, detected = _built(config, generator)
    state = {k: v.detach().clone() for k, v in built.model.diffusion_model.state_dict().items()}
    patcher = comfy.sd.load_diffusion_model_state_dict(state)
    if patcher is None:
        raise RuntimeError(f"ComfyUI's detection did not load the tiny {name} weights")
    return patcher, detected


def _conds(generator, context_dim, tokens=TOKENS, **extras):
    """A positive and a negative conditioning: random token embeddings and per-family extras."""

    def one():
        options = {k: (torch.randn(*v, generator=generator) if isinstance(v, tuple) else v) for k, v in extras.items()}
        return [[torch.randn(1, tokens, context_dim, generator=generator), options]]

    return one(), one()


def _latent(generator, channels=16, frames=None):
    shape = (1, channels, HEIGHT, WIDTH) if frames is None else (1, channels, frames, HEIGHT, WIDTH)
    return torch.randn(*shape, generator=generator)


# Fields that newer ComfyUI releases added to the Flux / Chroma parameter dataclasses (no defaults
# there), with the values ComfyUI's detection gives Flux.1 / Chroma files.
NEWER_PARAMS = {"txt_ids_dims": [], "vec_in_dim": None}


def _for_this_comfyui(params_class, config: dict) -> dict:
    """`config` plus the required fields this ComfyUI's `params_class` has and older ones lack."""
    fields = {f.name for f in dataclasses.fields(params_class) if f.default is dataclasses.MISSING}
    missing = {k: v for k, v in NEWER_PARAMS.items() if k in fields and k not in config}
    return {**config, **missing}


def _family(name, expected, patcher_and_detected, conds, latent):
    patcher, detected = patcher_and_detected
    return TinyDiT(name, patcher, conds[0], conds[1], latent, detected, expected)


def sd3():
    """SD3 (MMDiT, 2 joint blocks of 2 heads), loaded through ComfyUI's detection."""
    g = _generator("sd3")
    config = comfy.supported_models.SD3(dict(tiny_models.SD3_MMDIT))
    return _family("sd3", "SD3", _loaded("sd3", config, g), _conds(g, 64, pooled_output=(1, 64)), _latent(g))


def sd35_medium():
    """SD3.5-Medium-style MMDiT: RMS q/k norm and the extra image self-attention (x_block attn2)."""
    g = _generator("sd35_medium")
    unet = dict(tiny_models.SD3_MMDIT, qk_norm="rms", x_block_self_attn_layers=[0, 1])
    config = comfy.supported_models.SD3(unet)
    return _family("sd35_medium", "SD3", _loaded("sd35", config, g), _conds(g, 64, pooled_output=(1, 64)), _latent(g))


FLUX_BLOCKS = dict(
    in_channels=16,
    out_channels=16,
    vec_in_dim=32,
    context_in_dim=48,
    hidden_size=64,
    mlp_ratio=4.0,
    num_heads=2,
    depth=1,
    depth_single_blocks=1,
    axes_dim=[8, 12, 12],
    theta=10000,
    patch_size=2,
    qkv_bias=True,
)


def _flux_config(guidance_embed: bool) -> dict:
    import comfy.ldm.flux.model

    config = dict(FLUX_BLOCKS, image_model="flux", guidance_embed=guidance_embed)
    return _for_this_comfyui(comfy.ldm.flux.model.FluxParams, config)


def flux_dev():
    """Flux-architecture with the guidance embedding (Flux.1 dev / Kontext; distilled guidance)."""
    g = _generator("flux_dev")
    config = comfy.supported_models.Flux(_flux_config(guidance_embed=True))
    conds = _conds(g, 48, pooled_output=(1, 32), guidance=3.5)
    return _family("flux_dev", "Flux", _built(config, g), conds, _latent(g))


def flux_schnell():
    """Flux-architecture without the guidance embedding, with schnell's sampling (timestep-distilled)."""
    g = _generator("flux_schnell")
    config = comfy.supported_models.FluxSchnell(_flux_config(guidance_embed=False))
    conds = _conds(g, 48, pooled_output=(1, 32))
    return _family("flux_schnell", "FluxSchnell", _built(config, g), conds, _latent(g))


CHROMA_BLOCKS = dict(
    image_model="chroma",
    in_channels=64,
    out_channels=64,
    context_in_dim=768,
    hidden_size=64,
    mlp_ratio=4.0,
    num_heads=2,
    depth=1,
    depth_single_blocks=1,
    axes_dim=[8, 12, 12],
    theta=10000,
    patch_size=2,
    qkv_bias=True,
    in_dim=64,
    out_dim=64,
    hidden_dim=64,
    n_layers=1,
)


def chroma():
    """Chroma (Flux-architecture, no modulation weights: the distilled-guidance approximator; real CFG)."""
    g = _generator("chroma")
    import comfy.ldm.chroma.model

    config = comfy.supported_models.Chroma(_for_this_comfyui(comfy.ldm.chroma.model.ChromaParams, dict(CHROMA_BLOCKS)))
    conds = _conds(g, 768, pooled_output=None)  # ComfyUI's Chroma encoders give no pooled output
    return _family("chroma", "Chroma", _built(config, g), conds, _latent(g))


def qwen_image():
    """Qwen-Image (MMDiT-style dual-stream blocks over packed 2x2 patches)."""
    g = _generator("qwen_image")
    unet = dict(
        image_model="qwen_image",
        patch_size=2,
        in_channels=64,
        out_channels=16,
        num_layers=1,
        attention_head_dim=32,
        num_attention_heads=2,
        joint_attention_dim=48,
        axes_dims_rope=(8, 12, 12),
    )
    config = comfy.supported_models.QwenImage(unet)
    latent = _latent(g, frames=1)  # ComfyUI samples Qwen-Image in Wan 2.1 latents (B, C, 1, H, W)
    return _family("qwen_image", "QwenImage", _built(config, g), _conds(g, 48), latent)


def wan21(frames: int = 1):
    """Wan 2.1 text-to-video (5-D latents (B, C, T, H, W)), loaded through ComfyUI's detection."""
    g = _generator(f"wan21-{frames}")
    unet = dict(
        image_model="wan2.1",
        model_type="t2v",
        dim=128,
        ffn_dim=256,
        num_heads=1,
        num_layers=1,
        in_dim=16,
        out_dim=16,
        text_dim=4096,
        freq_dim=256,
    )
    config = comfy.supported_models.WAN21_T2V(unet)
    latent = _latent(g, frames=frames)
    return _family("wan21", "WAN21_T2V", _loaded("wan21", config, g), _conds(g, 4096), latent)


LUMINA_BLOCKS = dict(
    image_model="lumina2",
    patch_size=2,
    in_channels=16,
    dim=64,
    n_layers=1,
    n_refiner_layers=1,
    n_heads=2,
    n_kv_heads=2,
    multiple_of=16,
    cap_feat_dim=48,
    qk_norm=True,
    axes_dims=[8, 12, 12],
    axes_lens=[300, 512, 512],
)


def lumina2():
    """Lumina 2 (NextDiT: one joint stream of caption and image tokens)."""
    g = _generator("lumina2")
    config = comfy.supported_models.Lumina2(dict(LUMINA_BLOCKS))
    return _family("lumina2", "Lumina2", _built(config, g), _conds(g, 48), _latent(g))


def z_image():
    """Z-Image (NextDiT with Z-Image's modulation and timestep scale; ComfyUI names it ZImage only at dim
    3840, so the tiny one is detected as its Lumina2 base)."""
    g = _generator("z_image")
    unet = dict(LUMINA_BLOCKS, dim=256, n_heads=8, n_kv_heads=8, z_image_modulation=True, time_scale=1000.0)
    unet.update(rope_theta=256.0, pad_tokens_multiple=32)  # Z-Image's modulation needs dim >= 256
    config = comfy.supported_models.ZImage(unet)
    return _family("z_image", "Lumina2", _built(config, g), _conds(g, 48), _latent(g))


def aura_flow():
    """AuraFlow (MMDiT with register tokens; SDXL latents)."""
    g = _generator("aura_flow")
    unet = dict(
        in_channels=4,
        out_channels=4,
        patch_size=2,
        dim=64,
        n_layers=2,
        n_double_layers=1,
        n_heads=2,
        global_conddim=64,
        cond_seq_dim=2048,
        max_seq=16 * 16,
    )
    config = comfy.supported_models.AuraFlow(unet)
    return _family("aura_flow", "AuraFlow", _built(config, g), _conds(g, 2048), _latent(g, 4))


def cosmos_predict2():
    """Cosmos Predict2 text-to-image (MiniTrainDIT; ComfyUI's COSMOS_RFLOW sampling, VE-like sigma)."""
    g = _generator("cosmos_predict2")
    unet = dict(
        image_model="cosmos_predict2",
        max_img_h=240,
        max_img_w=240,
        max_frames=128,
        in_channels=16,
        out_channels=16,
        patch_spatial=2,
        patch_temporal=1,
        concat_padding_mask=True,
        model_channels=64,
        num_blocks=1,
        num_heads=2,
        crossattn_emb_channels=48,
        pos_emb_cls="rope3d",
        pos_emb_learnable=True,
        pos_emb_interpolation="crop",
        use_adaln_lora=True,
        adaln_lora_dim=16,
        rope_h_extrapolation_ratio=4.0,
        rope_w_extrapolation_ratio=4.0,
        rope_t_extrapolation_ratio=1.0,
        extra_per_block_abs_pos_emb=False,
        rope_enable_fps_modulation=False,
    )
    config = comfy.supported_models.CosmosT2IPredict2(unet)
    latent = _latent(g, frames=1)
    return _family("cosmos_predict2", "CosmosT2IPredict2", _built(config, g), _conds(g, 48), latent)


def pixart_sigma():
    """PixArt-Sigma (a cross-attention DiT on SDXL latents, VP / EPS): a family S-CFG does not read."""
    g = _generator("pixart_sigma")
    unet = dict(image_model="pixart_sigma", depth=1, hidden_size=64, num_heads=2, patch_size=2, in_channels=4,
                out_channels=8, caption_channels=32, pe_interpolation=1.0, micro_condition=False)  # fmt: skip
    config = comfy.supported_models.PixArtSigma(unet)
    return _family("pixart_sigma", "PixArtSigma", _built(config, g), _conds(g, 32), _latent(g, channels=4))


FAMILIES = {
    "sd3": sd3,
    "sd35_medium": sd35_medium,
    "flux_dev": flux_dev,
    "flux_schnell": flux_schnell,
    "chroma": chroma,
    "qwen_image": qwen_image,
    "wan21": wan21,
    "lumina2": lumina2,
    "z_image": z_image,
    "aura_flow": aura_flow,
    "cosmos_predict2": cosmos_predict2,
}
