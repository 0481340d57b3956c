"""transformers' `ModelTesterMixin` on hf_mm_blip2's stage-2 model (CLIP tower, 4-query Q-Former, Llama LM),
modelled on transformers' Blip2ForConditionalGenerationDecoderOnlyTest. Skips are transformers' own for BLIP-2."""

import unittest

from hf_mm import HfMmBlip2ForConditionalGeneration
from hf_mm import testing as T
from hf_mm.modeling.blip2 import HfMmBlip2Model

from .sdist import common_tests
from .testers import PrefixVLMTester, declare_auto_classes

common = common_tests()
declare_auto_classes(common, T.tiny_blip2_config())


class HfMmBlip2CommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmBlip2Model, HfMmBlip2ForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = PrefixVLMTester(self, lambda: T.tiny_blip2_config("clip", "llama"), tokens_per_image=4)
