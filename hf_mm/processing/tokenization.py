"""Tokenizer preparation shared by every family's processor and by model composition.

Composition (`from_vision_text_pretrained`) resizes the LM's embeddings for the tokens added here, and the processor
uses the same tokenizer, so the two always agree on the vocabulary and on the placeholder ids.
"""

from __future__ import annotations

from importlib import resources

IMAGE_TOKEN = "<image>"
END_OF_CHUNK = "<|endofchunk|>"  # Flamingo: closes each (image, text) chunk of an interleaved sequence
CHATML_TOKENS = ("<|im_start|>", "<|im_end|>")


def resources_template(name: str) -> str:
    """A chat template shipped in `hf_mm/processing/chat_templates/`."""
    return resources.files("hf_mm.processing").joinpath(f"chat_templates/{name}").read_text()


def default_chat_template() -> str:
    """hf_mm's ChatML template: renders `{"type": "image"}` parts as `<image>`, marks assistant turns."""
    return resources_template("chatml.jinja")


def prepare_tokenizer(tokenizer, image_token: str = IMAGE_TOKEN):
    """Add `<image>`, a pad token and (when the tokenizer has none) the ChatML template, in place.

    The model's composition and the processor's both call this on the same tokenizer checkpoint, so both agree on
    the vocabulary and on `image_token_id`. Returns the tokenizer.
    """
    new_tokens = [] if image_token in tokenizer.get_vocab() else [image_token]
    if tokenizer.chat_template is None:
        tokenizer.chat_template = default_chat_template()
        new_tokens += [t for t in CHATML_TOKENS if t not in tokenizer.get_vocab()]
    if new_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": new_tokens}, replace_extra_special_tokens=False)
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError("The tokenizer has neither a pad token nor an eos token; set tokenizer.pad_token.")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prepare_flamingo_tokenizer(tokenizer):
    """`prepare_tokenizer` (`<image>`, pad, a chat template) plus Flamingo's `<|endofchunk|>`, in place."""
    tokenizer = prepare_tokenizer(tokenizer)
    if END_OF_CHUNK not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [END_OF_CHUNK]}, replace_extra_special_tokens=False)
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
    "IMAGE_TOKEN",
    "END_OF_CHUNK",
    "prepare_flamingo_tokenizer",
    "CHATML_TOKENS",
    "default_chat_template",
    "prepare_tokenizer",
    "end_of_turn_ids",
]
