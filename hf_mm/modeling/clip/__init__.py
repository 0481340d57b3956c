from .configuration_clip import HfMmClipConfig
from .loss_clip import infonce_loss, sigmoid_loss
from .modeling_clip import HfMmClipModel, HfMmClipOutput, HfMmClipPreTrainedModel

__all__ = [
    "HfMmClipConfig",
    "HfMmClipModel",
    "HfMmClipOutput",
    "HfMmClipPreTrainedModel",
    "infonce_loss",
    "sigmoid_loss",
]
