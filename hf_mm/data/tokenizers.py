"""A byte-level BPE tokenizer trained in code: the tokenizer of the demos' tiny LMs and of `hf_mm.testing`.

It lives here, not in `hf_mm.testing`, because the apps (the demos, `compare`) build their small LMs with it and
apps import no test helper.
"""

from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

EOS_TOKEN, PAD_TOKEN = "<|endoftext|>", "<pad>"
EOS_ID, PAD_ID = 0, 1

DEFAULT_CORPUS = [
    "a photo of a red square on a black background",
    "the image shows a blue circle next to a green triangle",
    "user: what colour is the shape? assistant: the shape is red.",
    "describe the picture in one sentence. there are two cats and one dog.",
    "how many objects are there? three. four. five. six. seven. eight. nine. ten.",
    "0 1 2 3 4 5 6 7 8 9 yes no left right top bottom large small",
]


def tiny_tokenizer(corpus: list[str] | None = None, vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in code on `corpus` (default: a few sentences; 320 entries), like a plain LM's
    tokenizer: no `<image>`, no chat template."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus or DEFAULT_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, eos_token=EOS_TOKEN, bos_token=EOS_TOKEN, pad_token=PAD_TOKEN
    )


__all__ = ["DEFAULT_CORPUS", "EOS_ID", "EOS_TOKEN", "PAD_ID", "PAD_TOKEN", "tiny_tokenizer"]
