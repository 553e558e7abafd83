"""Hugging Face-format model folders under ComfyUI's models/ (captioners, guidance CLIP models).

One folder per model (config.json inside), found up to two levels deep in every path registered for
the folder kind (extra_model_paths.yaml can add more). A known hub model missing on disk is downloaded
when the machine is online, with a progress bar on the node; offline, the error says which files to put
where. ComfyUI's ModelPatcher manages the loaded models (device, offload).
"""

import logging
import os
import shutil

import comfy.model_management as mm
import comfy.utils
import folder_paths
import torch

log = logging.getLogger("dnp_guidance")

DOWNLOAD_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja", "tokenizer*"]
DTYPES = {"auto": None, "fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def pick_dtype(choice: str, device) -> torch.dtype:
    """The weights' dtype for a loader's `dtype` input: auto = fp16 where the device supports it, else fp32."""
    if DTYPES[choice] is not None:
        return DTYPES[choice]
    return torch.float16 if mm.should_use_fp16(device, prioritize_performance=False) else torch.float32


def register_folder(kind: str) -> None:
    """models/<kind>/ as a ComfyUI model folder."""
    folder_paths.add_model_folder_path(kind, os.path.join(folder_paths.models_dir, kind), is_default=True)


def model_folders(kind: str) -> list:
    return folder_paths.get_folder_paths(kind)


def local_models(kind: str) -> dict:
    """name -> folder, for every model folder (config.json inside) up to two levels deep; names starting
    with "." (the .downloads/ staging folder) are skipped."""
    found = {}
    for root in model_folders(kind):
        if not os.path.isdir(root):
            continue
        for entry in sorted(os.listdir(root)):
            path = os.path.join(root, entry)
            if entry.startswith("."):
                continue
            if os.path.isfile(os.path.join(path, "config.json")):
                found.setdefault(entry, path)
            elif os.path.isdir(path):
                for sub in sorted(os.listdir(path)):
                    if not sub.startswith(".") and os.path.isfile(os.path.join(path, sub, "config.json")):
                        found.setdefault(f"{entry}/{sub}", os.path.join(path, sub))
    return found


def _offline() -> bool:
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def missing_message(kind: str, name: str, reason: str, files: str) -> str:
    target = os.path.join(model_folders(kind)[0], *name.split("/"))
    return (
        f"Model '{name}' is not on disk and {reason}. Put the model's files ({files}) from "
        f"https://huggingface.co/{name} into {target}/ (any folder listed for '{kind}' in extra_model_paths.yaml "
        "works too)."
    )


def download(kind: str, name: str, files: str) -> str:
    """Fetch a hub model into models/<kind>/<owner>/<name>, with a progress bar on the node.

    The files go to models/<kind>/.downloads/<owner>/<name> first (a rerun resumes there) and the folder
    moves into place only once every file arrived, so a broken download never looks installed."""
    if _offline():
        raise FileNotFoundError(missing_message(kind, name, "the machine is offline (HF_HUB_OFFLINE is set)", files))
    from huggingface_hub import snapshot_download
    from tqdm.auto import tqdm

    root = model_folders(kind)[0]
    target = os.path.join(root, *name.split("/"))
    staging = os.path.join(root, ".downloads", *name.split("/"))
    bar = comfy.utils.ProgressBar(100)

    class NodeProgress(tqdm):
        """Shows the files-done bar on the node; snapshot_download's byte bars (unit "B") grow their
        totals as files start, so their fraction can go backwards."""

        def update(self, n=1):
            result = super().update(n)
            if self.unit != "B" and self.total:
                bar.update_absolute(max(bar.current, int(100 * self.n / self.total)), 100)
            return result

    log.info("DNP Guidance: downloading %s to %s", name, target)
    try:
        snapshot_download(name, local_dir=staging, allow_patterns=DOWNLOAD_PATTERNS, tqdm_class=NodeProgress)
    except Exception as error:  # network or hub errors: say what to do instead
        reason = f"the download failed ({error}); queue the prompt again to resume it"
        raise FileNotFoundError(missing_message(kind, name, reason, files)) from error
    if os.path.isdir(target):  # a leftover; resolve() only downloads models it did not find complete
        log.warning("DNP Guidance: replacing the incomplete folder %s with the download", target)
        shutil.rmtree(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    os.replace(staging, target)
    bar.update_absolute(100, 100)
    return target


def resolve(kind: str, name: str, files: str) -> str:
    """The folder of model `name`: on disk, or downloaded when it is a hub id."""
    local = local_models(kind)
    if name in local:
        return local[name]
    if "/" not in name:
        raise FileNotFoundError(missing_message(kind, name, "is not a Hugging Face id to download", files))
    return download(kind, name, files)


def require_safetensors(path: str, name: str) -> None:
    if not any(f.endswith(".safetensors") for f in os.listdir(path)):
        raise ValueError(
            f"Model '{name}' at {path} has no .safetensors weights. The pack only loads safetensors "
            "(pickle .bin files can run code); download the safetensors version of the model."
        )


class ManagedModule(torch.nn.Module):
    """Holds a transformers model for ComfyUI's ModelPatcher, which sets `.device` on what it manages
    (a read-only property on transformers models)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.inner = model
        self.device = next(model.parameters()).device
