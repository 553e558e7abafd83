"""Names of the text tokens at each position of a model's text conditioning, from the CLIP object's own
tokenizer, for S-CFG Regions' legend: SD1.x / SDXL (CLIP-L: 77 per chunk), SD3 / SD3.5 (CLIP-L/G's 77
then T5's), Flux and Chroma (T5; Flux's CLIP-L only feeds the pooled vector), Qwen-Image (Qwen2.5-VL
after the chat template ComfyUI cuts off), and single-encoder families (Lumina2's Gemma, Z-Image's Qwen3,
Wan's umT5, ...)."""

QWEN_IM_START, QWEN_USER, QWEN_NEWLINE = 151644, 872, 198


def context_keys(tokens: dict) -> list:
    """The tokenizer outputs whose tokens make up the conditioning, in their order in it."""
    if {"l", "g", "t5xxl"} <= set(tokens):
        return ["l", "t5xxl"]  # SD3: CLIP-L and CLIP-G side by side (77 positions), then T5
    if "t5xxl" in tokens:
        return ["t5xxl"]
    if "l" in tokens:
        return ["l"]  # SD1.x; SDXL's CLIP-G shares CLIP-L's positions
    return list(tokens)[:1]


def sub_tokenizer(clip, key: str):
    tokenizer = clip.tokenizer
    return getattr(tokenizer, f"clip_{key}", None) or getattr(tokenizer, key, None)


def qwen_template_end(ids: list) -> int:
    """Where ComfyUI's Qwen-Image text encoder starts the conditioning (QwenImageTEModel.encode_token_weights):
    at the second <|im_start|>, after its 'user' and newline."""
    starts = [i for i, token in enumerate(ids) if token == QWEN_IM_START][:2]
    if not starts:
        return 0
    end = starts[-1]
    if ids[end + 1 : end + 3] == [QWEN_USER, QWEN_NEWLINE]:
        end += 3
    return end


def label(tokenizer, token: int) -> str:
    if token == getattr(tokenizer, "start_token", None):
        return "<start>"
    if token == getattr(tokenizer, "end_token", None):
        return "<end>"
    if token == getattr(tokenizer, "pad_token", None):
        return "<pad>"
    text = tokenizer.tokenizer.convert_ids_to_tokens(int(token))
    return str(text).replace("</w>", "").replace("\u2581", "").replace("\u0120", "") or "<space>"


def token_labels(clip, prompt: str) -> dict:
    """Conditioning position -> token text ({} without a CLIP or a prompt)."""
    if clip is None or not prompt.strip():
        return {}
    tokens = clip.tokenize(prompt)
    labels, position = {}, 0
    for key in context_keys(tokens):
        tokenizer = sub_tokenizer(clip, key)
        ids = [int(pair[0]) for batch in tokens[key] for pair in batch if not hasattr(pair[0], "shape")]
        if key.startswith("qwen25"):
            ids = ids[qwen_template_end(ids) :]
        for token in ids:
            labels[position] = label(tokenizer, token) if tokenizer is not None else f"token {position}"
            position += 1
    return labels
