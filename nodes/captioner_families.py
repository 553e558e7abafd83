"""The captioner families: transformers classes, the checkpoints the loader offers, and how each is asked
for a caption that makes a good diffusion-negative prompt n* (what is in the image: nouns and attributes,
no boiler-plate) and how its answer is decoded.

Every family runs through transformers' native classes (no remote code). `min_transformers` is the
release that added the classes (their model docs' headers); nodes/model_checks.py checks it at load.

- BLIP captions unconditionally (Li et al. 2022). BLIP-2 answers the question in its "Question: ...
  Answer:" format (Li et al. 2023, the Hugging Face model card); its default asks what is in the image,
  which gives a short noun phrase. (Unprompted, BLIP-2 with Flan-T5 has no start token to begin from.)
- Florence-2 is a task-token model (Xiao et al. 2024): `<CAPTION>` gives one short sentence (the
  default), `<DETAILED_CAPTION>` / `<MORE_DETAILED_CAPTION>` longer ones; its processor's
  post_process_generation turns the output into the answer. The native conversions are the
  florence-community repositories (the microsoft/Florence-2-* repositories need remote code).
- LLaVA, Qwen2.5-VL, Qwen3-VL and SmolVLM2 are chat models: the question goes into the processor's
  chat template with the image, and the prompt is cut off the generated ids.
"""

import logging
from dataclasses import dataclass

log = logging.getLogger("dnp_guidance")

NO_PROMPT, BLIP2_QA, TASK_TOKEN, CHAT = "none", "question-answer", "task token", "chat"
# A short noun-and-attribute description: what n* needs (the DNP Negative Prompt node cleans the rest).
CHAT_INSTRUCTION = (
    "List the main objects in this image with their colours and other visible attributes, as one short "
    "comma-separated phrase. No sentence, no introduction."
)
CHAT_QUESTION_USE = "the instruction (empty: the pack's short objects-and-attributes instruction)"
FLORENCE_TASKS = ("<CAPTION>", "<DETAILED_CAPTION>", "<MORE_DETAILED_CAPTION>")


@dataclass(frozen=True)
class Family:
    model_type: str  # config.json's model_type
    label: str
    model_class: str
    processor_class: str
    min_transformers: str
    checkpoints: tuple  # Hugging Face ids the loader offers (and downloads), smallest first
    prompting: str  # NO_PROMPT, BLIP2_QA, TASK_TOKEN or CHAT
    question_use: str  # what the question input does, for tooltips and docs
    default_question: str = CHAT_INSTRUCTION  # what an empty question input asks (chat and BLIP-2 families)
    nested_images: bool = False  # the processor wants one list of images per prompt
    packages: tuple = ()  # Python packages its processor imports beyond transformers


FAMILIES = {
    family.model_type: family
    for family in (
        Family(
            "blip",
            "BLIP",
            "BlipForConditionalGeneration",
            "BlipProcessor",
            "4.26.0",
            ("Salesforce/blip-image-captioning-base", "Salesforce/blip-image-captioning-large"),
            NO_PROMPT,
            "ignored: BLIP captions unprompted",
        ),
        Family(
            "blip-2",
            "BLIP-2",
            "Blip2ForConditionalGeneration",
            "Blip2Processor",
            "4.27.0",
            ("Salesforce/blip2-opt-2.7b", "Salesforce/blip2-flan-t5-xl"),
            BLIP2_QA,
            "a question it answers (empty: 'What is in this image?')",
            default_question="What is in this image?",
        ),
        Family(
            "florence2",
            "Florence-2",
            "Florence2ForConditionalGeneration",
            "Florence2Processor",
            "4.56.0",
            ("florence-community/Florence-2-base", "florence-community/Florence-2-large"),
            TASK_TOKEN,
            "a task token: <CAPTION> (default), <DETAILED_CAPTION> or <MORE_DETAILED_CAPTION>; other text is ignored",
        ),
        Family(
            "llava",
            "LLaVA 1.5",
            "LlavaForConditionalGeneration",
            "LlavaProcessor",
            "4.36.0",
            ("llava-hf/llava-1.5-7b-hf",),
            CHAT,
            CHAT_QUESTION_USE,
        ),
        Family(
            "llava_next",
            "LLaVA-NeXT",
            "LlavaNextForConditionalGeneration",
            "LlavaNextProcessor",
            "4.39.0",
            ("llava-hf/llava-v1.6-mistral-7b-hf",),
            CHAT,
            CHAT_QUESTION_USE,
        ),
        Family(
            "qwen2_5_vl",
            "Qwen2.5-VL",
            "Qwen2_5_VLForConditionalGeneration",
            "Qwen2_5_VLProcessor",
            "4.49.0",
            ("Qwen/Qwen2.5-VL-3B-Instruct",),
            CHAT,
            CHAT_QUESTION_USE,
            nested_images=True,
        ),
        Family(
            "qwen3_vl",
            "Qwen3-VL",
            "Qwen3VLForConditionalGeneration",
            "Qwen3VLProcessor",
            "4.57.0",
            ("Qwen/Qwen3-VL-2B-Instruct", "Qwen/Qwen3-VL-4B-Instruct"),
            CHAT,
            CHAT_QUESTION_USE,
            nested_images=True,
        ),
        Family(
            "smolvlm",
            "SmolVLM2",
            "SmolVLMForConditionalGeneration",
            "SmolVLMProcessor",
            "4.50.0",
            ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "HuggingFaceTB/SmolVLM2-500M-Video-Instruct"),
            CHAT,
            CHAT_QUESTION_USE,
            nested_images=True,
            packages=("num2words",),
        ),
    )
}


def known_checkpoints() -> tuple:
    return tuple(checkpoint for family in FAMILIES.values() for checkpoint in family.checkpoints)


def supported_list() -> str:
    return ", ".join(f"{family.label} ({family.model_type})" for family in FAMILIES.values())


def family_classes(family: Family) -> tuple:
    import transformers

    return getattr(transformers, family.model_class), getattr(transformers, family.processor_class)


def florence_task(question: str) -> str:
    """The Florence-2 caption task for the question input: a caption task token, else <CAPTION>."""
    if question in FLORENCE_TASKS:
        return question
    if question:
        log.warning(
            "DNP Guidance: Florence-2 takes a task token, not a question: using <CAPTION> (the question input "
            "may be one of %s).",
            ", ".join(FLORENCE_TASKS),
        )
    return FLORENCE_TASKS[0]


def prompt(family: Family, processor, question: str):
    """The text the processor gets with each image (None: an unprompted caption)."""
    if family.prompting == NO_PROMPT:
        return None
    if family.prompting == TASK_TOKEN:
        return florence_task(question.strip())
    question = question.strip() or family.default_question
    if family.prompting == BLIP2_QA:
        return f"Question: {question} Answer:"
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    return processor.apply_chat_template(conversation, add_generation_prompt=True)


def decode(family: Family, processor, generated, task, image_sizes: list) -> list:
    """Caption strings from the generated ids (the prompt already cut off)."""
    texts = processor.batch_decode(generated, skip_special_tokens=True)
    post_processor = getattr(processor, "post_processor", None)
    if family.prompting == TASK_TOKEN and "pure_text" in getattr(post_processor, "parse_task_config", {}):
        texts = [
            processor.post_process_generation(text, task=task, image_size=size)[task]
            for text, size in zip(texts, image_sizes)
        ]
    return [text.strip() for text in texts]
