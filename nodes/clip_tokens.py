"""Token counts of a ComfyUI CLIP object's own tokenizer (the tightest of its text encoders), for fitting
DNP's negative prompt n* to the encoder's limit."""


def clip_tokenizer(clip):
    """The ComfyUI tokenizer of a CLIP's text encoders with the tightest limit (SD1: clip_l; SDXL: l/g)."""
    inner = [t for t in vars(clip.tokenizer).values() if hasattr(t, "tokenizer") and hasattr(t, "max_length")]
    return min(inner, key=lambda t: t.max_length) if inner else None


def clip_token_counter(clip):
    """count(text) -> tokens of the CLIP tokenizer (the tightest of its encoders), and its limit."""
    tokenizer = clip_tokenizer(clip)
    if tokenizer is None:
        return None, 0

    def count(text: str) -> int:
        return len(tokenizer.tokenizer(text, add_special_tokens=False)["input_ids"])

    return count, tokenizer.max_length - 2  # start and end tokens take two places
