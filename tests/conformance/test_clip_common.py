"""transformers' `ModelTesterMixin` on hf_mm_clip (a CLIP vision tower and a CLIP text tower with projections),
modelled on transformers' tests/models/clip CLIPModelTest. Skips are transformers' own for CLIPModel."""

import unittest

from transformers import CLIPTextConfig

from hf_mm import HfMmClipConfig, HfMmClipModel
from hf_mm import testing as T

from .sdist import common_tests
from .testers import DualEncoderTester, declare_auto_classes


def tiny_clip_config() -> HfMmClipConfig:
    text = CLIPTextConfig(vocab_size=T.TEXT_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=64, bos_token_id=0, eos_token_id=0)  # fmt: skip
    return HfMmClipConfig(vision_config=T.tiny_vision_config("clip"), text_config=text, projection_dim=24)


common = common_tests()
declare_auto_classes(common, tiny_clip_config())


class HfMmClipCommonTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmClipModel,)
    _is_composite = True

    def setUp(self):
        self.model_tester = DualEncoderTester(self, tiny_clip_config)
