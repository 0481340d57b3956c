"""hf_mm: composable, Hub-native vision-language models. `import hf_mm` registers every family with Auto*."""

from . import auto  # noqa: F401  (registration side effect)
from .convert import (
    from_transformers_blip2,
    from_transformers_clip,
    from_transformers_llava,
    from_transformers_qwen2_5_vl,
    from_transformers_siglip,
)
from .modeling import BRIDGES
from .modeling.blip2 import (
    HfMmBlip2Config,
    HfMmBlip2ForConditionalGeneration,
    HfMmBlip2ForImageTextRetrieval,
    HfMmBlip2Model,
)
from .modeling.clip import HfMmClipConfig, HfMmClipModel
from .modeling.flamingo import HfMmFlamingoConfig, HfMmFlamingoForConditionalGeneration, HfMmFlamingoModel
from .modeling.llava import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, HfMmLlavaModel
from .processing import HfMmBlip2Processor, HfMmClipProcessor, HfMmFlamingoProcessor, HfMmLlavaProcessor

__version__ = "0.1.0.dev0"

__all__ = [
    "BRIDGES",
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
