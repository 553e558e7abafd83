"""Build tiny captioners with seeded random weights (BLIP, BLIP-2 with OPT and T5, Florence-2, LLaVA 1.5,
LLaVA-NeXT, Qwen2.5-VL, Qwen3-VL, SmolVLM2) and a tiny CLIP for the loss-guidance tests, in Hugging Face
format.

Each lands in OUT/<name>/ with config.json, model.safetensors and its processor files, so the
pack's real loader (transformers' native classes, safetensors only) loads it like a downloaded
model. Small vocabularies, 2-layer towers, 32 px images: a few MB each, built in seconds.

    python scripts/make_tiny_captioners.py OUT [--only blip,blip2,florence2,qwen2.5-vl,...]
    python scripts/make_tiny_captioners.py OUT --only clip
"""

import argparse
import os

import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    BertTokenizerFast,
    Blip2Config,
    Blip2ForConditionalGeneration,
    Blip2Processor,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessor,
    BlipProcessor,
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
    LlavaNextProcessor,
    LlavaProcessor,
    PreTrainedTokenizerFast,
)

WORDS = (
    "a an the of in on with and photo picture image cat dog fox red blue green snow forest tree "
    "house car person woman man sky water field flower bird small large dark light blurry painting"
).split()
IMAGE = 32
PATCH = 8
VISION = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE, patch_size=PATCH
)


# The decoder-only language models' size (LLaVA's Llama, Qwen-VL's Qwen, SmolVLM2's Llama).
TINY_DECODER = dict(
    hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=2
)


def word_tokenizer(specials: list, **tokens) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over WORDS with the given special tokens first (`tokens`: the
    tokenizer's bos/eos/pad/... names and extra_special_tokens, replacing the <s> </s> <pad> defaults)."""
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    names = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>")
    return PreTrainedTokenizerFast(tokenizer_object=core, **{**names, **tokens})


def save(model, processor, out: str, specials: int) -> None:
    """Write model and processor. Random weights could end or pad at once, so the output rows of the
    special tokens (ids below `specials`) are zeroed: they lose to the words and every caption is
    `max_new_tokens` words long."""
    head = model.get_output_embeddings() or model.text_decoder.get_output_embeddings()  # BLIP: in its decoder
    with torch.no_grad():
        head.weight[:specials] = 0
        if getattr(head, "bias", None) is not None:
            head.bias[:specials] = -1e4
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)


def build_blip(out: str) -> None:
    vocab_file = os.path.join(out, "vocab.txt")
    os.makedirs(out, exist_ok=True)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"]
    with open(vocab_file, "w") as handle:
        handle.write("\n".join(specials + WORDS) + "\n")
    tokenizer = BertTokenizerFast(vocab_file, bos_token="[DEC]", do_lower_case=True)
    text = dict(
        vocab_size=len(specials) + len(WORDS),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        encoder_hidden_size=32,
        bos_token_id=5,
        pad_token_id=0,
        sep_token_id=3,
        eos_token_id=3,
        max_position_embeddings=64,
    )
    config = BlipConfig(text_config=text, vision_config=VISION, projection_dim=32, image_text_hidden_size=32)
    processor = BlipProcessor(BlipImageProcessor(size={"height": IMAGE, "width": IMAGE}), tokenizer)
    save(BlipForConditionalGeneration(config).eval(), processor, out, len(specials))


QFORMER = dict(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=2,
    encoder_hidden_size=32,
    vocab_size=64,
)


def build_blip2_with(out: str, specials: list, text_config: dict) -> None:
    """BLIP-2 (4 query tokens) around the given language model; `specials` start the vocabulary."""
    tokenizer = word_tokenizer(specials)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = Blip2Config(
        vision_config=VISION,
        qformer_config=QFORMER,
        text_config=dict(vocab_size=len(tokenizer), **text_config),
        num_query_tokens=4,
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )
    image_processor = BlipImageProcessor(size={"height": IMAGE, "width": IMAGE})
    processor = Blip2Processor(image_processor, tokenizer, num_query_tokens=4)
    save(Blip2ForConditionalGeneration(config).eval(), processor, out, len(specials))


def build_blip2(out: str) -> None:
    """BLIP-2 with an OPT decoder-only language model."""
    opt = dict(
        model_type="opt",
        hidden_size=32,
        ffn_dim=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        word_embed_proj_dim=32,
        max_position_embeddings=128,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    build_blip2_with(out, ["<pad>", "<unk>", "<s>", "</s>", "<image>"], opt)


def build_blip2_t5(out: str) -> None:
    """BLIP-2 with a Flan-T5-style encoder-decoder language model."""
    t5 = dict(
        model_type="t5",
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    build_blip2_with(out, ["<pad>", "</s>", "<unk>", "<s>", "<image>"], t5)


LLAVA_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER: "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image>\n{% else %}{{ item['text'] }}{% endif %}{% endfor %}"
    " {% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


LLAVA_SPECIALS = ["<pad>", "<unk>", "<s>", "</s>", "<image>", "USER:", "ASSISTANT:"]


def llava_parts(max_positions: int) -> tuple:
    """The tokenizer and the shared config parts of the LLaVA family (CLIP vision, Llama text)."""
    tokenizer = word_tokenizer(LLAVA_SPECIALS)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    config = dict(
        vision_config=dict(model_type="clip_vision_model", projection_dim=32, **VISION),
        text_config=dict(
            model_type="llama",
            vocab_size=len(tokenizer),
            **TINY_DECODER,
            max_position_embeddings=max_positions,
            bos_token_id=2,
            eos_token_id=3,
            pad_token_id=0,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    processor_options = dict(
        patch_size=PATCH,
        vision_feature_select_strategy="default",
        chat_template=LLAVA_TEMPLATE,
        num_additional_image_tokens=1,
    )
    return tokenizer, config, processor_options


def build_llava(out: str) -> None:
    tokenizer, config, options = llava_parts(256)
    image_processor = CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE})
    processor = LlavaProcessor(image_processor, tokenizer, **options)
    save(LlavaForConditionalGeneration(LlavaConfig(**config)).eval(), processor, out, len(LLAVA_SPECIALS))


def build_llava_next(out: str) -> None:
    """LLaVA-NeXT (the llava-hf 1.6 family): one image grid of a single tile."""
    tokenizer, config, options = llava_parts(512)
    grid = [[IMAGE, IMAGE]]
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}, image_grid_pinpoints=grid
    )
    processor = LlavaNextProcessor(image_processor, tokenizer, **options)
    model = LlavaNextForConditionalGeneration(LlavaNextConfig(image_grid_pinpoints=grid, **config))
    save(model.eval(), processor, out, len(LLAVA_SPECIALS))


def build_clip(out: str) -> None:
    """A CLIP model (both towers) for the pack's CLIP losses, loaded by Guidance CLIP Loader."""
    tokenizer = word_tokenizer(["<pad>", "<unk>", "<s>", "</s>"])
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=32,
        bos_token_id=2,
        eos_token_id=3,
        pad_token_id=0,
    )
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=VISION, projection_dim=32)).eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    CLIPImageProcessor(size={"shortest_edge": IMAGE}, crop_size={"height": IMAGE, "width": IMAGE}).save_pretrained(out)


def build_florence2(out: str) -> None:
    """Florence-2 (native format): a 2-stage DaViT and a BART encoder-decoder; <CAPTION> etc. as in the
    published processor, whose post-processing config for plain-text tasks it carries."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<image>"]
    tokenizer = word_tokenizer(specials, extra_special_tokens={"image_token": "<image>"})
    vision = dict(
        depths=[1, 1],
        patch_size=[7, 3],
        patch_stride=[4, 2],
        patch_padding=[3, 1],
        patch_prenorm=[False, True],
        embed_dim=[16, 32],
        num_heads=[2, 2],
        num_groups=[2, 2],
        window_size=2,
        projection_dim=32,
        max_position_embeddings=16,
        max_temporal_embeddings=4,
    )
    text = dict(
        model_type="bart",
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=2,
        decoder_layers=2,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        bos_token_id=0,
        pad_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=2,
        forced_eos_token_id=2,
    )
    config = transformers.Florence2Config(
        vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>")
    )
    image_processor = CLIPImageProcessor(size={"height": IMAGE, "width": IMAGE}, do_center_crop=False)
    image_processor.image_seq_length = (IMAGE // 8) ** 2 + 1  # 4x4 cells after strides 4 and 2, plus the pooled one
    processor = transformers.Florence2Processor(image_processor, tokenizer, post_processor_config={"pure_text": {}})
    save(transformers.Florence2ForConditionalGeneration(config).eval(), processor, out, len(specials))


QWEN_SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
    "<unk>",
    "user",
    "assistant",
]
QWEN_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ item['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_qwen_vl(out: str, version: str) -> None:
    """Qwen2.5-VL or Qwen3-VL: a 2-block vision tower (8 px patches, 2x2 merge) and a 2-layer Qwen
    decoder with multimodal RoPE, the Qwen chat layout (<|im_start|>, <|vision_start|><|image_pad|>)."""
    tokenizer = word_tokenizer(
        QWEN_SPECIALS,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS[1:7]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in QWEN_SPECIALS}
    text = dict(
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=512,
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        rope_parameters={"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0},
    )
    vision = dict(
        depth=2,
        hidden_size=32,
        intermediate_size=64,
        num_heads=2,
        patch_size=PATCH,
        spatial_merge_size=2,
        temporal_patch_size=2,
        out_hidden_size=32,
    )
    if version == "2.5":
        vision.update(window_size=32, fullatt_block_indexes=[1])
        classes = (transformers.Qwen2_5_VLConfig, transformers.Qwen2_5_VLForConditionalGeneration)
        processor_class, video_class = transformers.Qwen2_5_VLProcessor, transformers.Qwen2VLVideoProcessor
    else:
        vision.update(num_position_embeddings=64, deepstack_visual_indexes=[1])
        text.update(head_dim=16)
        text["rope_parameters"]["mrope_interleaved"] = True
        classes = (transformers.Qwen3VLConfig, transformers.Qwen3VLForConditionalGeneration)
        processor_class, video_class = transformers.Qwen3VLProcessor, transformers.Qwen3VLVideoProcessor
    config_class, model_class = classes
    config = config_class(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    grid = dict(patch_size=PATCH, merge_size=2, temporal_patch_size=2)
    image_processor = transformers.Qwen2VLImageProcessor(min_pixels=16 * 16, max_pixels=IMAGE * IMAGE, **grid)
    processor = processor_class(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=video_class(**grid),
        chat_template=QWEN_TEMPLATE,
    )
    save(model_class(config).eval(), processor, out, len(QWEN_SPECIALS))


SMOLVLM_SPECIALS = [
    "<pad>",
    "<unk>",
    "<|im_start|>",
    "<end_of_utterance>",
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "User:",
    "Assistant:",
]
SMOLVLM_TEMPLATE = (
    "<|im_start|>{% for message in messages %}{{ message['role'] | capitalize }}:{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>{% else %} {{ item['text'] }}{% endif %}{% endfor %}<end_of_utterance>\n"
    "{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
)


def build_smolvlm(out: str) -> None:
    """SmolVLM2: a SigLIP-style vision tower with pixel shuffle (scale 2), a 2-layer Llama decoder, one
    image tile (no splitting) of (32 / 8)^2 / 2^2 = 4 image tokens."""
    image_tokens = dict(
        image_token="<image>",
        fake_image_token="<fake_token_around_image>",
        global_image_token="<global-img>",
        end_of_utterance_token="<end_of_utterance>",
    )
    tokenizer = word_tokenizer(
        SMOLVLM_SPECIALS, bos_token="<|im_start|>", eos_token="<end_of_utterance>", extra_special_tokens=image_tokens
    )
    tokenizer.add_special_tokens({"additional_special_tokens": SMOLVLM_SPECIALS[2:]})
    ids = {token: tokenizer.convert_tokens_to_ids(token) for token in SMOLVLM_SPECIALS}
    text = dict(
        model_type="llama",
        vocab_size=len(tokenizer),
        **TINY_DECODER,
        max_position_embeddings=256,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<end_of_utterance>"],
        pad_token_id=0,
    )
    config = transformers.SmolVLMConfig(
        vision_config=VISION, text_config=text, scale_factor=2, image_token_id=ids["<image>"]
    )
    edge = {"longest_edge": IMAGE}
    image_processor = transformers.SmolVLMImageProcessor(size=edge, max_image_size=edge, do_image_splitting=False)
    video_processor = transformers.SmolVLMVideoProcessor(size=edge, max_image_size=edge)
    processor = transformers.SmolVLMProcessor(
        image_processor,
        tokenizer,
        video_processor,
        image_seq_len=(IMAGE // PATCH) ** 2 // 4,
        chat_template=SMOLVLM_TEMPLATE,
    )
    save(transformers.SmolVLMForConditionalGeneration(config).eval(), processor, out, len(SMOLVLM_SPECIALS))


CAPTIONERS = ("blip", "blip2", "blip2-t5", "florence2", "llava", "llava-next", "qwen2.5-vl", "qwen3-vl", "smolvlm")
BUILDERS = {
    "clip": build_clip,
    "blip": build_blip,
    "blip2": build_blip2,
    "blip2-t5": build_blip2_t5,
    "llava": build_llava,
    "llava-next": build_llava_next,
    "florence2": build_florence2,
    "qwen2.5-vl": lambda out: build_qwen_vl(out, "2.5"),
    "qwen3-vl": lambda out: build_qwen_vl(out, "3"),
    "smolvlm": build_smolvlm,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--only", default=",".join(CAPTIONERS), help=f"some of {', '.join(BUILDERS)}")
    args = parser.parse_args()
    torch.manual_seed(0)
    for name in args.only.split(","):
        BUILDERS[name](os.path.join(args.out, f"dnpg-tiny-{name}"))
        print(f"wrote {os.path.join(args.out, f'dnpg-tiny-{name}')}")


if __name__ == "__main__":
    main()
