from .configuration_flamingo import HfMmFlamingoConfig
from .modeling_flamingo import (
    FlamingoBridge,
    GatedCrossAttentionBlock,
    HfMmFlamingoForConditionalGeneration,
    HfMmFlamingoModel,
    HfMmFlamingoPreTrainedModel,
    find_decoder_layers,
)

__all__ = [
    "FlamingoBridge",
    "GatedCrossAttentionBlock",
    "HfMmFlamingoConfig",
    "HfMmFlamingoForConditionalGeneration",
    "HfMmFlamingoModel",
    "HfMmFlamingoPreTrainedModel",
    "find_decoder_layers",
]
