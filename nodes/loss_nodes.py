"""The loss nodes of Loss Guidance (Shen et al., NeurIPS 2024): colour, brightness and reference-image
targets and the CLIP text / image losses, each adding one loss to a DNPG_LOSS chain. Maths in
guidance/losses.py."""

from ..guidance import losses as loss_maths
from . import validation
from .guidance_clip import (
    CATEGORY,
    GUIDANCE_CLIP,
    clip_text_embedding,
    clip_vision_image_embedder,
    guidance_clip_image_embedder,
    image_embedding,
)

LOSS = "DNPG_LOSS"


def _weight_input():
    return (
        "FLOAT",
        {
            "default": 1.0,
            "min": 0.0,
            "max": 1000.0,
            "step": 0.01,
            "tooltip": "Weight of this loss in the sum (losses add up: total = sum of weight * ||residual||).",
        },
    )


def _optional_loss_inputs(mask: bool = True) -> dict:
    optional = {
        "add_to": (
            LOSS,
            {
                "tooltip": "Losses to add this one to (chain several loss nodes, then connect the last to Loss Guidance)."
            },
        )
    }
    if mask:
        optional["mask"] = (
            "MASK",
            {
                "tooltip": "Only the white part of the image counts. Needs the generated image's aspect ratio "
                "(it is resized to the image)."
            },
        )
    return optional


def _mask_tensor(mask):
    """ComfyUI MASK (B, H, W) or (H, W) -> (B, 1, H, W) float."""
    if mask is None:
        return None
    mask = mask.float()
    return (mask if mask.ndim == 3 else mask[None]).unsqueeze(1)


def _chain(add_to, loss) -> tuple:
    return (tuple(add_to or ()) + (loss,),)


def parse_hex_colour(text: str) -> tuple:
    """'#RRGGBB' (or 'RRGGBB') -> (r, g, b) in [0, 1]."""
    digits = text.strip().lstrip("#")
    if len(digits) != 6 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ValueError(f"Colour Target Loss: colour must be a hex colour like #FF8800, got {text!r}.")
    return tuple(int(digits[i : i + 2], 16) / 255 for i in (0, 2, 4))


class ColourTargetLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "colour": (
                    "STRING",
                    {"default": "#D04020", "tooltip": "Target mean colour of the (masked) image, as hex #RRGGBB."},
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ("The losses so far plus this one; connect to Loss Guidance or another loss node.",)
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: distance between the mean colour of the image (inside the mask, if given) and a target colour. "
        "Needs no extra network; works on the decoded image (VAE or the fast latent preview)."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, colour, weight, add_to=None, mask=None):
        validation.require_valid(ColourTargetLoss, weight=weight)
        return _chain(add_to, loss_maths.colour_target(parse_hex_colour(colour), _mask_tensor(mask), weight))


class BrightnessTargetLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "brightness": (
                    "FLOAT",
                    {
                        "default": 0.7,
                        "min": 0.0,
                        "max": 1.0,
                        "step": 0.01,
                        "tooltip": "Target mean brightness (luma) of the (masked) image: 0 black, 1 white.",
                    },
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: distance between the mean brightness (Rec. 601 luma) of the image, inside the mask if given, and a "
        "target. Needs no extra network."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, brightness, weight):
        return validation.verdict(cls, brightness=brightness, weight=weight)

    def build(self, brightness, weight, add_to=None, mask=None):
        validation.require_valid(BrightnessTargetLoss, brightness=brightness, weight=weight)
        return _chain(add_to, loss_maths.brightness_target(brightness, _mask_tensor(mask), weight))


class ReferenceImageLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": (
                    "IMAGE",
                    {"tooltip": "The reference the generated image should resemble (batch 1 or the batch size)."},
                ),
                "space": (
                    ["pixel", "latent"],
                    {
                        "tooltip": "pixel: compare decoded images (needs a decoder in Loss Guidance). latent: compare "
                        "latents (cheap; the reference is encoded with the vae input)."
                    },
                ),
                "weight": _weight_input(),
            },
            "optional": {
                **_optional_loss_inputs(),
                "vae": ("VAE", {"tooltip": "Encodes the reference for space = latent (use the checkpoint's VAE)."}),
            },
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: L2 distance to a reference image, in pixels or in latent space, inside the mask if given (a masked-"
        "region target). The reference needs the generated image's aspect ratio."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, image, space, weight, add_to=None, mask=None, vae=None):
        validation.require_valid(ReferenceImageLoss, weight=weight)
        if space == "latent":
            if vae is None:
                raise ValueError("Reference Image Loss: space = latent needs the vae input (the checkpoint's VAE).")
            reference = vae.encode(image[..., :3]).float()
            reference = reference[:, :, 0] if reference.ndim == 5 else reference  # a video VAE's single frame
            return _chain(add_to, loss_maths.reference_target(reference, loss_maths.LATENT, _mask_tensor(mask), weight))
        reference = image[..., :3].movedim(-1, 1).float()
        return _chain(add_to, loss_maths.reference_target(reference, loss_maths.IMAGE, _mask_tensor(mask), weight))


class ClipTextLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "guidance_clip": (GUIDANCE_CLIP, {"tooltip": "From Guidance CLIP Loader."}),
                "text": (
                    "STRING",
                    {"multiline": True, "default": "", "tooltip": "What the image should show, in CLIP's words."},
                ),
                "weight": _weight_input(),
            },
            "optional": _optional_loss_inputs(mask=False),
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: CLIP distance between the image and a text, ||normalize(CLIP(image)) - normalize(CLIP(text))|| "
        "(lower = more similar). Runs CLIP on the decoded image at every guided step."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, guidance_clip, text, weight, add_to=None):
        validation.require_valid(ClipTextLoss, weight=weight)
        if not text.strip():
            raise ValueError("CLIP Text Loss: text is empty. Type what the image should show.")
        target = clip_text_embedding(guidance_clip, text)
        embed = guidance_clip_image_embedder(guidance_clip)
        loss = loss_maths.embedding_target("CLIP text", embed, target, weight, (guidance_clip.patcher,))
        return _chain(add_to, loss)


class ClipImageLoss:
    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "image": ("IMAGE", {"tooltip": "Reference image(s) whose CLIP embedding the result should match."}),
                "weight": _weight_input(),
            },
            "optional": {
                "guidance_clip": (GUIDANCE_CLIP, {"tooltip": "A CLIP from Guidance CLIP Loader (or use clip_vision)."}),
                "clip_vision": (
                    "CLIP_VISION",
                    {"tooltip": "A CLIP vision model from ComfyUI's Load CLIP Vision (or use guidance_clip)."},
                ),
                **_optional_loss_inputs(mask=False),
            },
        }

    RETURN_TYPES = (LOSS,)
    OUTPUT_TOOLTIPS = ColourTargetLoss.OUTPUT_TOOLTIPS
    FUNCTION = "build"
    CATEGORY = CATEGORY
    DESCRIPTION = (
        "Loss: CLIP image-image distance between the generated image and a reference (style / content "
        "similarity). Uses either a Guidance CLIP or a ComfyUI CLIP vision model; connect exactly one."
    )

    @classmethod
    def VALIDATE_INPUTS(cls, weight):
        return validation.verdict(cls, weight=weight)

    def build(self, image, weight, guidance_clip=None, clip_vision=None, add_to=None):
        validation.require_valid(ClipImageLoss, weight=weight)
        if (guidance_clip is None) == (clip_vision is None):
            raise ValueError("CLIP Image Loss: connect exactly one of guidance_clip and clip_vision.")
        if guidance_clip is not None:
            embed, patcher = guidance_clip_image_embedder(guidance_clip), guidance_clip.patcher
        else:
            embed, patcher = clip_vision_image_embedder(clip_vision), clip_vision.patcher
        target = image_embedding(embed, image, patcher)
        return _chain(add_to, loss_maths.embedding_target("CLIP image", embed, target, weight, (patcher,)))


NODE_CLASS_MAPPINGS = {
    "DNPG_ColourTargetLoss": ColourTargetLoss,
    "DNPG_BrightnessTargetLoss": BrightnessTargetLoss,
    "DNPG_ReferenceImageLoss": ReferenceImageLoss,
    "DNPG_ClipTextLoss": ClipTextLoss,
    "DNPG_ClipImageLoss": ClipImageLoss,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "DNPG_ColourTargetLoss": "Colour Target Loss",
    "DNPG_BrightnessTargetLoss": "Brightness Target Loss",
    "DNPG_ReferenceImageLoss": "Reference Image Loss",
    "DNPG_ClipTextLoss": "CLIP Text Loss",
    "DNPG_ClipImageLoss": "CLIP Image Loss",
}
