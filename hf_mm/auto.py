"""The only place hf_mm registers with transformers' Auto* classes. Imported by `import hf_mm`.

After this, `AutoConfig`, `AutoModel`, `AutoModelForImageTextToText`, `AutoModelForZeroShotImageClassification`, `AutoModelForCausalLM` (TRL's model-from-path
and PEFT's AutoPeftModelForCausalLM fall back to it) and `AutoProcessor` load hf_mm checkpoints without
`trust_remote_code`.
"""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
)

from .modeling.blip2 import HfMmBlip2Config, HfMmBlip2ForConditionalGeneration, HfMmBlip2Model
from .modeling.clip import HfMmClipConfig, HfMmClipModel
from .modeling.flamingo import HfMmFlamingoConfig, HfMmFlamingoForConditionalGeneration, HfMmFlamingoModel
from .modeling.llava import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, HfMmLlavaModel
from .modeling.qwen2_5_vl import (
    HfMmQwen2_5_ViTConfig,
    HfMmQwen2_5_ViTModel,
    HfMmQwen2_5_VLConfig,
    HfMmQwen2_5_VLForConditionalGeneration,
    HfMmQwen2_5_VLModel,
)
from .processing.image_processing_qwen2_5_vl import HfMmQwen2_5_VLImageProcessor
from .processing.processing_blip2 import HfMmBlip2Processor
from .processing.processing_clip import HfMmClipProcessor
from .processing.processing_flamingo import HfMmFlamingoProcessor
from .processing.processing_llava import HfMmLlavaProcessor
from .processing.processing_qwen2_5_vl import HfMmQwen2_5_VLProcessor


def _register_llava() -> None:
    AutoConfig.register(HfMmLlavaConfig.model_type, HfMmLlavaConfig, exist_ok=True)
    AutoModel.register(HfMmLlavaConfig, HfMmLlavaModel, exist_ok=True)
    AutoModelForImageTextToText.register(HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, exist_ok=True)
    # LLaVA reuses its vision tower's image processor, so it registers no image processor of its own.
    AutoProcessor.register(HfMmLlavaConfig, HfMmLlavaProcessor, exist_ok=True)


_register_llava()


def _register_clip() -> None:
    AutoConfig.register(HfMmClipConfig.model_type, HfMmClipConfig, exist_ok=True)
    AutoModel.register(HfMmClipConfig, HfMmClipModel, exist_ok=True)
    # transformers' zero-shot-image-classification pipeline loads this and reads `logits_per_image`.
    AutoModelForZeroShotImageClassification.register(HfMmClipConfig, HfMmClipModel, exist_ok=True)
    AutoProcessor.register(HfMmClipConfig, HfMmClipProcessor, exist_ok=True)


_register_clip()


def _register_qwen2_5_vit() -> None:
    # The native-resolution ViT is a tower of its own, so AutoModel builds it like any other vision encoder.
    AutoConfig.register(HfMmQwen2_5_ViTConfig.model_type, HfMmQwen2_5_ViTConfig, exist_ok=True)
    AutoModel.register(HfMmQwen2_5_ViTConfig, HfMmQwen2_5_ViTModel, exist_ok=True)
    # A saved tower ships its image processor, so composition can read both from one folder.
    AutoImageProcessor.register(
        HfMmQwen2_5_ViTConfig, image_processor_classes={"pil": HfMmQwen2_5_VLImageProcessor}, exist_ok=True
    )


_register_qwen2_5_vit()


def _register_qwen2_5_vl() -> None:
    AutoConfig.register(HfMmQwen2_5_VLConfig.model_type, HfMmQwen2_5_VLConfig, exist_ok=True)
    AutoModel.register(HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLModel, exist_ok=True)
    AutoModelForImageTextToText.register(HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLForConditionalGeneration, exist_ok=True)
    AutoImageProcessor.register(
        HfMmQwen2_5_VLConfig, image_processor_classes={"pil": HfMmQwen2_5_VLImageProcessor}, exist_ok=True
    )
    AutoProcessor.register(HfMmQwen2_5_VLConfig, HfMmQwen2_5_VLProcessor, exist_ok=True)


_register_qwen2_5_vl()


def _register_blip2() -> None:
    # Stage 2 is what Auto* loads. A stage-1 checkpoint (HfMmBlip2ForImageTextRetrieval) shares the model_type and
    # loads through its own class; transformers has no Auto class for image-text retrieval.
    AutoConfig.register(HfMmBlip2Config.model_type, HfMmBlip2Config, exist_ok=True)
    AutoModel.register(HfMmBlip2Config, HfMmBlip2Model, exist_ok=True)
    AutoModelForImageTextToText.register(HfMmBlip2Config, HfMmBlip2ForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(HfMmBlip2Config, HfMmBlip2ForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(HfMmBlip2Config, HfMmBlip2Processor, exist_ok=True)


_register_blip2()


def _register_flamingo() -> None:
    AutoConfig.register(HfMmFlamingoConfig.model_type, HfMmFlamingoConfig, exist_ok=True)
    AutoModel.register(HfMmFlamingoConfig, HfMmFlamingoModel, exist_ok=True)
    AutoModelForImageTextToText.register(HfMmFlamingoConfig, HfMmFlamingoForConditionalGeneration, exist_ok=True)
    AutoModelForCausalLM.register(HfMmFlamingoConfig, HfMmFlamingoForConditionalGeneration, exist_ok=True)
    AutoProcessor.register(HfMmFlamingoConfig, HfMmFlamingoProcessor, exist_ok=True)


_register_flamingo()
