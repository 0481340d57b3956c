from .configuration_blip2 import HfMmBlip2Config
from .masks import MODES, qformer_attention_mask
from .modeling_blip2 import (
    HfMmBlip2ForConditionalGeneration,
    HfMmBlip2ForImageTextRetrieval,
    HfMmBlip2ImageTextOutput,
    HfMmBlip2Model,
    HfMmBlip2PreTrainedModel,
    QFormerBridge,
    hard_negatives,
)

__all__ = [
    "MODES",
    "qformer_attention_mask",
    "HfMmBlip2Config",
    "HfMmBlip2PreTrainedModel",
    "HfMmBlip2Model",
    "HfMmBlip2ForConditionalGeneration",
    "HfMmBlip2ForImageTextRetrieval",
    "HfMmBlip2ImageTextOutput",
    "QFormerBridge",
    "hard_negatives",
]
