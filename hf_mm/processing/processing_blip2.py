"""HfMmBlip2Processor: the tower's image processor + the LM's tokenizer + the Q-Former's tokenizer.

Each `<image>` becomes exactly `num_query_tokens` placeholders, whatever the image size: the Q-Former always emits
that many tokens. Everything else (image type checks, the truncation guard, the chat template) is LLaVA's.

- `qformer_tokenizer` tokenizes the Q-Former's own text: stage-1 captions, and for an instruction-aware model
  (InstructBLIP) the instruction. With `instruction_aware`, every call also returns `qformer_input_ids` /
  `qformer_attention_mask`, from `qformer_text` when given, else from `text` with its `<image>` tokens removed.
"""

from __future__ import annotations

import copy

from transformers import AutoConfig, AutoTokenizer
from transformers.processing_utils import MultiModalData

from ..modeling.blip2.configuration_blip2 import HfMmBlip2Config
from ..modeling.compat import AutoImageProcessor
from ..modeling.towers import load_vision_config
from ..tokens import IMAGE_TOKEN, prepare_tokenizer
from .processing_llava import HfMmLlavaProcessor


class HfMmBlip2Processor(HfMmLlavaProcessor):
    r"""
    image_processor: the vision tower's image processor. tokenizer: the LM's tokenizer (with `<image>`).
    qformer_tokenizer: the Q-Former's tokenizer (BERT's in BLIP-2).
    num_query_tokens: placeholders per image (the model's `num_query_tokens`).
    instruction_aware: also tokenize the instruction for the Q-Former (InstructBLIP).
    """

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        qformer_tokenizer=None,
        chat_template=None,
        num_query_tokens: int = 32,
        instruction_aware: bool = False,
        image_token: str = IMAGE_TOKEN,
        **kwargs,
    ):
        self.num_query_tokens = num_query_tokens
        self.instruction_aware = instruction_aware
        super().__init__(
            image_processor, tokenizer, chat_template=chat_template, image_token=image_token,
            qformer_tokenizer=qformer_tokenizer, **kwargs,
        )  # fmt: skip

    @classmethod
    def from_vision_text_pretrained(
        cls,
        vision_model_name_or_path: str,
        text_model_name_or_path: str,
        qformer_tokenizer=None,
        chat_template: str | None = None,
        **config_kwargs,
    ) -> HfMmBlip2Processor:
        """The processor matching `HfMmBlip2ForConditionalGeneration.from_vision_text_pretrained` with the same
        arguments. `qformer_tokenizer`: a tokenizer or its name/path (default: a copy of the LM's, unprepared)."""
        config = HfMmBlip2Config(
            vision_config=load_vision_config(vision_model_name_or_path),
            text_config=AutoConfig.from_pretrained(text_model_name_or_path),
            **config_kwargs,
        )
        if qformer_tokenizer is None or isinstance(qformer_tokenizer, str):
            qformer_tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer or text_model_name_or_path)
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path))
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path)
        return cls.from_blip2_config(config, image_processor, tokenizer, qformer_tokenizer, chat_template)

    @classmethod
    def from_vision_pretrained(
        cls, vision_model_name_or_path: str, qformer_tokenizer, **config_kwargs
    ) -> HfMmBlip2Processor:
        """The stage-1 processor matching `HfMmBlip2ForImageTextRetrieval.from_vision_pretrained`: the tower's image
        processor and the Q-Former's tokenizer. Stage 1 has no LM, so a prepared copy of the Q-Former tokenizer
        stands in for the LM's until `from_stage1` brings the real one."""
        if isinstance(qformer_tokenizer, str):
            qformer_tokenizer = AutoTokenizer.from_pretrained(qformer_tokenizer)
        config = HfMmBlip2Config(vision_config=load_vision_config(vision_model_name_or_path), **config_kwargs)
        tokenizer = prepare_tokenizer(copy.deepcopy(qformer_tokenizer))
        image_processor = AutoImageProcessor.from_pretrained(vision_model_name_or_path)
        return cls.from_blip2_config(config, image_processor, tokenizer, qformer_tokenizer)

    @classmethod
    def from_stage1(
        cls,
        stage1_name_or_path: str,
        text_model_name_or_path: str,
        instruction_aware: bool = False,
        chat_template=None,
    ) -> HfMmBlip2Processor:
        """The stage-2 processor matching `HfMmBlip2ForConditionalGeneration.from_stage1` with the same arguments:
        the stage-1 image processor and Q-Former tokenizer, with the LM's tokenizer (given `<image>`)."""
        stage1 = cls.from_pretrained(stage1_name_or_path)
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(text_model_name_or_path))
        return cls(
            image_processor=stage1.image_processor,
            tokenizer=tokenizer,
            qformer_tokenizer=stage1.qformer_tokenizer,
            chat_template=chat_template,
            num_query_tokens=stage1.num_query_tokens,
            instruction_aware=instruction_aware,
        )

    @classmethod
    def from_blip2_config(cls, config: HfMmBlip2Config, image_processor, tokenizer, qformer_tokenizer,
                          chat_template=None) -> HfMmBlip2Processor:  # fmt: skip
        """The processor whose placeholder count and Q-Former text input match `config`."""
        if config.instruction_aware and len(qformer_tokenizer) > config.qformer_config.vocab_size:
            raise ValueError(
                f"The Q-Former tokenizer has {len(qformer_tokenizer)} tokens but qformer_config.vocab_size is "
                f"{config.qformer_config.vocab_size}; build the Q-Former with vocab_size >= {len(qformer_tokenizer)}."
            )
        return cls(
            image_processor=image_processor,
            tokenizer=tokenizer,
            qformer_tokenizer=qformer_tokenizer,
            chat_template=chat_template,
            num_query_tokens=config.num_query_tokens,
            instruction_aware=config.instruction_aware,
        )

    def num_image_tokens(self, height: int, width: int) -> int:
        """The Q-Former emits `num_query_tokens` per image, whatever its size."""
        return self.num_query_tokens

    def _get_num_multimodal_tokens(self, image_sizes=None, **kwargs) -> MultiModalData:
        """`num_query_tokens` placeholders (and 1 pixel tensor) per image: what serving engines size runs with."""
        n = len(image_sizes or [])
        return MultiModalData(num_image_tokens=[self.num_query_tokens] * n, num_image_patches=[1] * n)

    def __call__(self, images=None, text=None, qformer_text=None, **kwargs):
        outputs = super().__call__(images=images, text=text, **kwargs)
        if self.instruction_aware and (text is not None or qformer_text is not None):
            if qformer_text is None:
                texts = [text] if isinstance(text, str) else list(text)
                qformer_text = [t.replace(self.image_token, "").strip() for t in texts]
            qformer = self.qformer_tokenizer(
                qformer_text, padding=True, return_tensors=kwargs.get("return_tensors"), add_special_tokens=True
            )
            outputs["qformer_input_ids"] = qformer["input_ids"]
            outputs["qformer_attention_mask"] = qformer["attention_mask"]
        return outputs

    @property
    def model_input_names(self) -> list[str]:
        names = ["input_ids", "attention_mask", "pixel_values"]
        return names + (["qformer_input_ids", "qformer_attention_mask"] if self.instruction_aware else [])


__all__ = ["HfMmBlip2Processor"]
