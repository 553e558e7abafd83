"""Checks a Hugging Face-format model folder passes before transformers sees it, so a broken install
fails with a message that names the model, the file and the fix instead of a bare parser error or,
worse, a model that loads and quietly does nothing (a missing tokenizer captions "" and makes a CLIP
text loss ignore its text).

- every *.json file parses (config.json, tokenizer_config.json, preprocessor_config.json, ...);
- the folder holds the parts its family needs: safetensors weights, tokenizer files, image processor;
- the running transformers is new enough for the family (the pack's floor and the family's own);
- the loaded tokenizer tells two different texts apart.
"""

import glob
import importlib.util
import json
import os

import transformers
from packaging.version import Version

# transformers releases. The pack passes `dtype=` to from_pretrained (4.56, which replaced `torch_dtype`).
PACK_MIN_TRANSFORMERS = "4.56.0"

# One entry per alternative file set; a folder needs one of them.
TOKENIZER_FILE_SETS = (
    ("tokenizer.json",),
    ("vocab.json", "merges.txt"),
    ("tokenizer.model",),
    ("spiece.model",),
    ("sentencepiece.bpe.model",),
    ("vocab.txt",),
)
IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
PROBE_TEXTS = ("a red cat in the snow", "two blue cars on a road")


def json_files(path: str) -> list:
    return sorted(glob.glob(os.path.join(path, "*.json")))


def read_json(path: str, what: str) -> dict:
    """The parsed JSON file `path`; a malformed one raises naming the file and the model."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"{what}: {os.path.basename(path)} in {os.path.dirname(path)} is not valid JSON ({error}). "
            "The file is damaged or was saved from a web page instead of downloaded raw: download it again "
            "from the model's Hugging Face page."
        ) from error


def check_json_files(path: str, what: str) -> None:
    for file in json_files(path):
        read_json(file, what)


def has_any(path: str, sets) -> bool:
    return any(all(os.path.isfile(os.path.join(path, file)) for file in files) for files in sets)


def missing_parts(path: str, needs_image_processor: bool = True) -> list:
    """What the folder lacks of: config, safetensors weights, tokenizer, image processor."""
    missing = []
    if not os.path.isfile(os.path.join(path, "config.json")):
        missing.append("config.json")
    if not glob.glob(os.path.join(path, "*.safetensors")):
        missing.append("the *.safetensors weights")
    if not has_any(path, TOKENIZER_FILE_SETS):
        missing.append(
            "the tokenizer (tokenizer.json, or vocab.json + merges.txt, or tokenizer.model / spiece.model / vocab.txt)"
        )
    if needs_image_processor and not has_any(path, [(file,) for file in IMAGE_PROCESSOR_FILES]):
        missing.append("the image processor (preprocessor_config.json or processor_config.json)")
    return missing


def require_complete(path: str, what: str, hub_hint: str, needs_image_processor: bool = True) -> None:
    """Raise naming every missing part; `hub_hint` says where the files come from."""
    missing = missing_parts(path, needs_image_processor)
    if missing:
        raise FileNotFoundError(
            f"{what} at {path} is incomplete: it has no {'; no '.join(missing)}. Copy the missing files from "
            f"{hub_hint} into that folder (or delete the folder and let the pack download the model again)."
        )


def transformers_version() -> str:
    return transformers.__version__


def transformers_has(name: str) -> bool:
    return hasattr(transformers, name)


def required_transformers(family_min: str) -> str:
    return max(Version(PACK_MIN_TRANSFORMERS), Version(family_min)).base_version


def require_transformers(label: str, family_min: str, class_names: tuple) -> None:
    """The running transformers has the family's classes and is at least the family's floor."""
    needed = required_transformers(family_min)
    installed = transformers_version()
    absent = [name for name in class_names if not transformers_has(name)]
    if Version(installed) < Version(needed) or absent:
        detail = f" (it lacks {', '.join(absent)})" if absent else ""
        raise RuntimeError(
            f"{label} captioners need transformers >= {needed}; this ComfyUI has transformers {installed}{detail}. "
            f'Update it in ComfyUI\'s Python environment: python -m pip install -U "transformers>={needed}" '
            "(ComfyUI-Manager installs the pack's requirements.txt, which asks for it)."
        )


def require_packages(label: str, packages: tuple) -> None:
    """The Python packages a family's processor imports are installed."""
    absent = [package for package in packages if importlib.util.find_spec(package) is None]
    if absent:
        names = " ".join(absent)
        raise RuntimeError(
            f"{label} captioners need the Python package(s) {names} (their processor imports them). Install them in "
            f"ComfyUI's Python environment: python -m pip install {names} (the pack's requirements.txt lists them)."
        )


def require_all_weights(loading: dict, what: str, path: str, label: str) -> None:
    """from_pretrained's loading info has no missing weights: a checkpoint in another layout (e.g. a
    remote-code port) would otherwise load with randomly initialised layers and caption noise."""
    missing = sorted(loading.get("missing_keys", ()))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise ValueError(
            f"{what} at {path}: its weights do not fit transformers' native {label} model ({len(missing)} weights "
            f"missing: {shown}), so it would caption with random layers. The folder probably holds another port of "
            "the model (a remote-code one): download the checkpoint the Captioner Loader lists for this family."
        )


def require_distinct_tokens(tokenizer, what: str, path: str) -> None:
    """A tokenizer that gives two different texts the same ids has lost its vocabulary."""
    first, second = (tokenizer(text, add_special_tokens=False)["input_ids"] for text in PROBE_TEXTS)
    if first == second:
        raise ValueError(
            f"{what} at {path}: its tokenizer maps different texts to the same ids ({first}), so it would ignore "
            "every prompt. The tokenizer files (tokenizer.json / vocab files) are wrong or incomplete: download "
            "them again from the model's Hugging Face page."
        )


def hub_page(name: str) -> str:
    """Where a model's files come from: its hub page for a hub id, else a generic pointer."""
    return f"https://huggingface.co/{name}" if "/" in name else "the model's Hugging Face page"
