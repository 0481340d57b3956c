"""Token constants and tokenizer preparation: the bottom layer that modeling (composition) and processing share.

Composition (`from_vision_text_pretrained`) resizes the LM's embeddings for the tokens added here, and the processor
uses the same tokenizer, so the two always agree on the vocabulary and on the placeholder ids. Nothing here imports
another hf_mm module; the chat templates are package data read from `hf_mm/processing/chat_templates/`.
"""

from __future__ import annotations

from importlib import resources

IMAGE_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"  # Flamingo: closes each (image, text) chunk of an interleaved sequence
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")
QWEN_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


def resources_template(name: str) -> str:
    """A chat template shipped in `hf_mm/processing/chat_templates/`."""
    return resources.files("hf_mm").joinpath(f"processing/chat_templates/{name}").read_text()


def default_chat_template() -> str:
    """hf_mm's ChatML template: renders `{"type": "image"}` parts as `<image>`, marks assistant turns."""
    return resources_template("chatml.jinja")


def prepare_tokenizer(tokenizer, image_token: str = IMAGE_TOKEN):
    """Add `<image>`, a pad token and (when the tokenizer has none) the ChatML template, in place.

    The model's composition and the processor's both call this on the same tokenizer checkpoint, so both agree on
    the vocabulary and on `image_token_id`. Returns the tokenizer.
    """
    tokens = [image_token]
    if tokenizer.chat_template is None:
        tokenizer.chat_template = default_chat_template()
        tokens += CHATML_TOKENS
    _add_tokens(tokenizer, tokens)
    set_pad_token(tokenizer)
    return tokenizer


def prepare_flamingo_tokenizer(tokenizer):
    """`prepare_tokenizer` (`<image>`, pad, a chat template) plus Flamingo's `<|endofchunk|>`, in place."""
    tokenizer = prepare_tokenizer(tokenizer)
    _add_tokens(tokenizer, [END_OF_CHUNK])
    return tokenizer


def _add_tokens(tokenizer, tokens: list[str]) -> None:
    new = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new:
        tokenizer.add_special_tokens({"additional_special_tokens": new}, replace_extra_special_tokens=False)


def set_pad_token(tokenizer) -> None:
    """A pad token (the EOS token when there is none), in place; refuses a tokenizer with neither."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token


def prepare_qwen_tokenizer(tokenizer):
    """Qwen2.5-VL's vision tokens, a pad token and (when the tokenizer has none) ChatML with hf_mm's Qwen2.5-VL
    template, in place. Returns the tokenizer."""
    tokens = list(QWEN_VISION_TOKENS)
    if tokenizer.chat_template is None:
        tokenizer.chat_template = resources_template("qwen2_5_vl.jinja")
        tokens += CHATML_TOKENS
    _add_tokens(tokenizer, tokens)
    set_pad_token(tokenizer)
    return tokenizer


def end_of_turn_ids(tokenizer) -> list[int]:
    """Token ids that end a turn besides EOS: `<|im_end|>` when the chat template uses it. Generation must stop
    there, or a chat model trained on ChatML keeps talking after its answer."""
    template = tokenizer.chat_template or ""
    end = CHATML_TOKENS[1]
    return [tokenizer.convert_tokens_to_ids(end)] if end in template and end in tokenizer.get_vocab() else []


def stop_at_end_of_turn(generation_config, tokenizer) -> None:
    """Add the chat template's end-of-turn tokens to `generation_config.eos_token_id`, in place."""
    eos = generation_config.eos_token_id
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    generation_config.eos_token_id = eos + [i for i in end_of_turn_ids(tokenizer) if i not in eos] or None


__all__ = [
    "stop_at_end_of_turn",
    "set_pad_token",
    "QWEN_VISION_TOKENS",
    "prepare_qwen_tokenizer",
    "resources_template",
    "IMAGE_TOKEN",
    "END_OF_CHUNK",
    "prepare_flamingo_tokenizer",
    "CHATML_TOKENS",
    "default_chat_template",
    "prepare_tokenizer",
    "end_of_turn_ids",
]
