from .configuration_llava import HfMmLlavaConfig
from .modeling_llava import HfMmLlavaForConditionalGeneration, HfMmLlavaModel, HfMmLlavaPreTrainedModel

__all__ = ["HfMmLlavaConfig", "HfMmLlavaModel", "HfMmLlavaForConditionalGeneration", "HfMmLlavaPreTrainedModel"]
