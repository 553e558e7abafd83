"""Build tiny captioners with seeded random weights (BLIP, BLIP-2 with OPT and T5, LLaVA 1.5 and
LLaVA-NeXT) and a tiny CLIP for the loss-guidance tests, in Hugging Face format.

Each lands in OUT/<name>/ with config.json, model.safetensors and its processor files, so the
pack's real loader (transformers' native classes, safetensors only) loads it like a downloaded
model. Small vocabularies, 2-layer towers, 32 px images: a few MB each, built in seconds.

    python scripts/make_tiny_captioners.py OUT [--only blip,blip2,blip2-t5,llava,llava-next]
    python scripts/make_tiny_captioners.py OUT --only clip
"""

import argparse
import os

import torch
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


def word_tokenizer(specials: list) -> PreTrainedTokenizerFast:
    """A word-level fast tokenizer over WORDS with the given special tokens first."""
    vocab = {token: index for index, token in enumerate(specials + WORDS)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )


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
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
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


CAPTIONERS = ("blip", "blip2", "blip2-t5", "llava", "llava-next")
BUILDERS = {
    "clip": build_clip,
    "blip": build_blip,
    "blip2": build_blip2,
    "blip2-t5": build_blip2_t5,
    "llava": build_llava,
    "llava-next": build_llava_next,
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
