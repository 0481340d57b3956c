"""transformers' `ModelTesterMixin` on hf_mm_llava (CLIP tower, Llama LM, the 2-layer MLP bridge), modelled on
transformers' tests/models/llava/test_modeling_llava.py. Skips are transformers' own for Llava, with its reasons."""

import unittest

from hf_mm import HfMmLlavaForConditionalGeneration, HfMmLlavaModel
from hf_mm import testing as T

from .sdist import common_tests
from .testers import PrefixVLMTester, declare_auto_classes

common = common_tests()
declare_auto_classes(common, T.tiny_llava_config())


class HfMmLlavaCommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmLlavaModel, HfMmLlavaForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = PrefixVLMTester(self, lambda: T.tiny_llava_config("clip", "llama"), tokens_per_image=16)
