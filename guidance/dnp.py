"""Diffusion-negative prompting, DNP (Desai & Vasconcelos, arXiv 2411.05473):
turn the caption of the DNS image into the negative prompt n*, then generate with (p, n*).

Text only (no ComfyUI, no model): caption clean-up, combining n* with the user's own negative
prompt, and truncation to the text encoder's token limit at a word boundary.
"""

import re
from typing import Callable

COMBINE_MODES = ("append", "replace", "prepend")

# BLIP's "arafed"/"araffe" are artefacts of its training captions, anywhere in a caption.
_ARTEFACTS = re.compile(r"\b(?:arafed|araffe|arafe)\b\s*", re.IGNORECASE)
# Openings captioners add that say nothing about the content.
_BOILERPLATE = re.compile(
    r"^\s*(?:there (?:is|are)\s+|this is\s+|it is\s+|"
    r"(?:a|an) (?:picture|image|photo|photograph|illustration|painting|drawing|rendering) (?:of|showing|with)\s+|"
    r"the image (?:shows|depicts|features|contains|is of)\s+|in (?:the|this) image,?\s+|"
    r"(?:this|the) (?:picture|photo) (?:shows|depicts)\s+)+",
    re.IGNORECASE,
)


def clean_caption(caption: str) -> str:
    """Strip captioner boiler-plate openings, artefact words, whitespace and the final full stop."""
    text = _BOILERPLATE.sub("", _ARTEFACTS.sub("", " ".join(caption.split())))
    return text.strip().rstrip(".").strip()


def combine_negative(caption: str, user_negative: str, mode: str = "append") -> str:
    """n* from the cleaned caption and the user's own negative prompt.

    append: "user, caption"; prepend: "caption, user"; replace: the caption alone.
    """
    if mode not in COMBINE_MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(COMBINE_MODES)}")
    parts = (
        [caption] if mode == "replace" else [user_negative, caption] if mode == "append" else [caption, user_negative]
    )
    return ", ".join(part.strip() for part in parts if part and part.strip())


def truncate_words(text: str, count_tokens: Callable[[str], int], limit: int) -> tuple:
    """The longest word prefix of `text` with at most `limit` tokens, and whether it was cut."""
    if limit <= 0 or count_tokens(text) <= limit:
        return text, False
    words = text.split()
    lo, hi = 0, len(words)  # invariant: words[:lo] fits, words[:hi + 1] does not
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(" ".join(words[:mid])) <= limit:
            lo = mid
        else:
            hi = mid - 1
    return " ".join(words[:lo]).rstrip(","), True
