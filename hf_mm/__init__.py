"""hf_mm: composable, Hub-native vision-language models. `import hf_mm` registers every family with Auto*."""

from . import auto  # noqa: F401  (registration side effect)
from .convert import from_transformers_clip, from_transformers_llava, from_transformers_siglip
from .modeling import BRIDGES
from .modeling.clip import HfMmClipConfig, HfMmClipModel
from .modeling.llava import HfMmLlavaConfig, HfMmLlavaForConditionalGeneration, HfMmLlavaModel
from .processing import HfMmClipProcessor, HfMmLlavaProcessor

__version__ = "0.1.0.dev0"

__all__ = [
    "BRIDGES",
    "HfMmClipConfig",
    "HfMmClipModel",
    "HfMmClipProcessor",
    "HfMmLlavaConfig",
    "HfMmLlavaModel",
    "HfMmLlavaForConditionalGeneration",
    "HfMmLlavaProcessor",
    "from_transformers_clip",
    "from_transformers_llava",
    "from_transformers_siglip",
]
