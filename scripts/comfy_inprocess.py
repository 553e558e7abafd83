"""Use the provisioned real ComfyUI in this process (CPU), with this pack imported as ComfyUI does.

For tests and benchmarks; needs the DNPG_* variables that scripts/provision.sh writes.
"""

import importlib.util
import os
import sys
import types

PACK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CHECKPOINT = "dnpg_tiny_sd15.safetensors"
# The tiny Chroma set (scripts/make_tiny_checkpoint.py --chroma-dir), by (loader node, widget).
TINY_CHROMA = {
    ("UNETLoader", "unet_name"): "dnpg_tiny_chroma.safetensors",
    ("CLIPLoader", "clip_name"): "dnpg_tiny_clip_l.safetensors",
    ("VAELoader", "vae_name"): "dnpg_tiny_flux_vae.safetensors",
}
# The tiny all-in-one SD3.5 Medium checkpoint (scripts/make_tiny_checkpoint.py --sd35-out).
TINY_SD35 = {("CheckpointLoaderSimple", "ckpt_name"): "dnpg_tiny_sd35_medium.safetensors"}
# The shipped workflows whose loaders take other tiny files than the SD1.5 checkpoint, by file name.
TINY_MODELS_BY_WORKFLOW = {
    "dnp_auto_compare_chroma.json": TINY_CHROMA,
    "scfg_compare_sd35.json": TINY_SD35,
}


def comfy_dir() -> str:
    path = os.environ.get("DNPG_COMFYUI")
    if not path or not os.path.isfile(os.path.join(path, "main.py")):
        raise RuntimeError("DNPG_COMFYUI is not set: run through scripts/test.sh or source the provision env file")
    return path


def load_pack(name: str = "dnp_guidance"):
    """Import the pack the way ComfyUI does: a package from its folder, relative imports inside."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(PACK_DIR, "__init__.py"), submodule_search_locations=[PACK_DIR]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _add_test_model_paths(folder_paths) -> None:
    """What --extra-model-paths-config does for the server: register the test models folders."""
    import yaml

    with open(os.environ["DNPG_EXTRA_MODEL_PATHS"]) as handle:
        for entry in yaml.safe_load(handle).values():
            base = entry.pop("base_path")
            for kind, sub in entry.items():
                folder_paths.add_model_folder_path(kind, os.path.join(base, sub), is_default=True)


def boot(progress_bars: bool = True) -> types.SimpleNamespace:
    """Import ComfyUI on the CPU with the test model folders, and the pack (benchmarks turn the
    samplers' progress bars off)."""
    path = comfy_dir()
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.samplers
    import comfy.sd
    import comfy.utils
    import folder_paths
    import nodes

    comfy.utils.PROGRESS_BAR_ENABLED = progress_bars
    _add_test_model_paths(folder_paths)
    return types.SimpleNamespace(pack=load_pack(), nodes=nodes, folder_paths=folder_paths, sd=comfy.sd)


def load_tiny(comfy, positive: str = "a photo of a red fox in the snow", negative: str = "blurry"):
    """The tiny random SD1.5 checkpoint: model, clip, vae, and two encoded prompts."""
    path = comfy.folder_paths.get_full_path_or_raise("checkpoints", TINY_CHECKPOINT)
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(path, output_vae=True, output_clip=True)
    encode = comfy.nodes.CLIPTextEncode().encode
    return types.SimpleNamespace(
        model=model, clip=clip, vae=vae, positive=encode(clip, positive)[0], negative=encode(clip, negative)[0]
    )


def default_settings(node_cls) -> dict:
    """A node's default settings: the first choice of each list input and the default of each other required
    widget (for Loss Guidance: every input but model, losses and vae)."""
    settings = {}
    for name, spec in node_cls.INPUT_TYPES()["required"].items():
        if isinstance(spec[0], list):
            settings[name] = spec[0][0]
        elif "default" in spec[1]:
            settings[name] = spec[1]["default"]
    return settings
