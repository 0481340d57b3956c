"""hf_mm: composable, Hub-native vision-language models. `import hf_mm` registers every family with Auto*."""

from . import auto  # noqa: F401  (registration side effect)
from .convert import (
    from_transformers_blip2,
    from_transformers_clip,
    from_transformers_llava,
    from_transformers_qwen2_5_vl,
    from_transformers_siglip,
)
from .families import FAMILIES, Family, get_family, register_family
from .modeling import BRIDGES, Bridge, register_bridge
from .modeling.blip2 import (
    HfMmBlip2Config,
    HfMmBlip2ForConditionalGeneration,
    HfMmBlip2ForImageTextRetrieval,
    HfMmBlip2Model,
)
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
from .processing import (
    HfMmBlip2Processor,
    HfMmClipProcessor,
    HfMmFlamingoProcessor,
    HfMmLlavaProcessor,
    HfMmQwen2_5_VLImageProcessor,
    HfMmQwen2_5_VLProcessor,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "BRIDGES",
    "Bridge",
    "register_bridge",
    "FAMILIES",
    "Family",
    "get_family",
    "register_family",
    "HfMmQwen2_5_ViTConfig",
    "HfMmQwen2_5_ViTModel",
    "HfMmQwen2_5_VLConfig",
    "HfMmQwen2_5_VLModel",
    "HfMmQwen2_5_VLForConditionalGeneration",
    "HfMmQwen2_5_VLImageProcessor",
    "HfMmQwen2_5_VLProcessor",
    "HfMmBlip2Config",
    "HfMmBlip2Model",
    "HfMmBlip2ForConditionalGeneration",
    "HfMmBlip2ForImageTextRetrieval",
    "HfMmBlip2Processor",
    "HfMmFlamingoConfig",
    "HfMmFlamingoModel",
    "HfMmFlamingoForConditionalGeneration",
    "HfMmFlamingoProcessor",
    "HfMmClipConfig",
    "HfMmClipModel",
    "HfMmClipProcessor",
    "HfMmLlavaConfig",
    "HfMmLlavaModel",
    "HfMmLlavaForConditionalGeneration",
    "HfMmLlavaProcessor",
    "from_transformers_blip2",
    "from_transformers_clip",
    "from_transformers_llava",
    "from_transformers_qwen2_5_vl",
    "from_transformers_siglip",
]
