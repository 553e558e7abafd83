"""Small SDXL- and SD3-architecture models built in memory from ComfyUI's own classes (random weights)."""

import comfy.model_patcher
import comfy.supported_models
import torch

SDXL_UNET = dict(
    in_channels=4,
    out_channels=4,
    model_channels=64,
    num_res_blocks=[1, 1, 1],
    channel_mult=[1, 2, 4],
    transformer_depth=[0, 1, 1],
    transformer_depth_output=[0, 0, 1, 1, 1, 1],
    transformer_depth_middle=1,
    context_dim=2048,
    num_head_channels=32,
    num_heads=-1,
    adm_in_channels=2816,
    use_linear_in_transformer=True,
    use_spatial_transformer=True,
    legacy=False,
    num_classes="sequential",
    image_size=32,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)
SD2_UNET = dict(
    in_channels=4,
    out_channels=4,
    model_channels=64,
    num_res_blocks=[1, 1],
    channel_mult=[1, 2],
    transformer_depth=[1, 1],
    transformer_depth_output=[1, 1, 1, 1],
    transformer_depth_middle=1,
    context_dim=1024,
    num_head_channels=32,
    num_heads=-1,
    use_linear_in_transformer=True,
    use_spatial_transformer=True,
    legacy=False,
    adm_in_channels=None,
    image_size=32,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)
SD3_MMDIT = dict(
    in_channels=16,
    patch_size=2,
    depth=2,
    pos_embed_max_size=16,
    adm_in_channels=64,
    num_patches=256,
    pos_embed_scaling_factor=None,
    context_embedder_config={"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
)


def randomise_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Fan-in scaled normal weights, zero biases, unit norm scales: finite, non-trivial outputs."""
    with torch.no_grad():
        for name, param in module.named_parameters():
            if param.ndim > 1:
                param.copy_(torch.randn(param.shape, generator=generator) / param[0].numel() ** 0.5)
            else:
                param.fill_(0.0 if name.endswith("bias") else 1.0)


def fill_empty_buffers_(module: torch.nn.Module, generator: torch.Generator) -> None:
    """Random values in the buffers that ComfyUI allocates with torch.empty and fills from the weights
    file (MMDiT's `pos_embed`), so an in-memory model never computes with uninitialised memory."""
    with torch.no_grad():
        for name, buffer in module.named_buffers():
            if name.endswith("pos_embed") and buffer.is_floating_point():
                buffer.copy_(0.1 * torch.randn(buffer.shape, generator=generator))


def patcher(model_config, generator=None) -> comfy.model_patcher.ModelPatcher:
    """The config's model with random weights (seed 0 unless a generator is given), on the CPU."""
    generator = torch.Generator().manual_seed(0) if generator is None else generator
    model = model_config.get_model({})
    randomise_(model, generator)
    fill_empty_buffers_(model, generator)
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def sdxl():
    """(model, positive, negative): a 3-level SDXL UNet (attention at 1/2 and 1/4) and random conds."""
    generator = torch.Generator().manual_seed(1)

    def cond():
        return [
            [
                torch.randn(1, 77, 2048, generator=generator),
                {"pooled_output": torch.randn(1, 1280, generator=generator)},
            ]
        ]

    return patcher(comfy.supported_models.SDXL(SDXL_UNET)), cond(), cond()


def sd2_v():
    """(model, positive, negative): a small SD2.x-architecture UNet with v-prediction, and random conds."""
    import comfy.model_base

    config = comfy.supported_models.SD20(SD2_UNET)
    config.model_type = lambda *args, **kwargs: comfy.model_base.ModelType.V_PREDICTION
    generator = torch.Generator().manual_seed(2)
    conds = [[[torch.randn(1, 77, 1024, generator=generator), {}]] for _ in range(2)]
    return patcher(config), conds[0], conds[1]


def sd3():
    return patcher(comfy.supported_models.SD3(SD3_MMDIT))
