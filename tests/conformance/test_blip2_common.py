"""transformers' `ModelTesterMixin` on hf_mm_blip2's stage-2 model (CLIP tower, 4-query Q-Former, Llama LM),
modelled on transformers' Blip2ForConditionalGenerationDecoderOnlyTest. Skips are transformers' own for BLIP-2."""

import unittest

from hf_mm import HfMmBlip2ForConditionalGeneration
from hf_mm import testing as T
from hf_mm.modeling.blip2 import HfMmBlip2Model

from .sdist import common_tests
from .testers import NO_PIXELS, PrefixVLMTester, declare_auto_classes, skip_mixin_tests


def tiny_config():
    """SigLIP without its pooling head: BLIP-2 reads the tower's post-layernorm output, so every tower weight is on
    the gradient path (as Blip2VisionModel in transformers' own test), and the gradient-checkpointing checks hold."""
    config = T.tiny_blip2_config("siglip", "llama")
    config.vision_config.vision_use_head = False
    return config


common = common_tests()
declare_auto_classes(common, T.tiny_blip2_config())


@skip_mixin_tests("test_eager_matches_sdpa_inference", "test_model_rope_scaling_from_config", reason=NO_PIXELS)
class HfMmBlip2CommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmBlip2Model, HfMmBlip2ForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = PrefixVLMTester(self, tiny_config, tokens_per_image=4)
