"""transformers' `ModelTesterMixin` on hf_mm_flamingo (CLIP tower, perceiver resampler, gated blocks before every
Llama layer). transformers has no Flamingo; its Flamingo-style model is Idefics, whose skips apply here."""

import unittest

from hf_mm import testing as T
from hf_mm.modeling.flamingo import HfMmFlamingoForConditionalGeneration, HfMmFlamingoModel

from .sdist import common_tests
from .testers import PrefixVLMTester, declare_auto_classes

common = common_tests()
declare_auto_classes(common, T.tiny_flamingo_config())


class HfMmFlamingoCommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmFlamingoModel, HfMmFlamingoForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        # One <image> token per image: Flamingo's text keeps a single marker, the media enter by cross-attention.
        self.model_tester = PrefixVLMTester(self, lambda: T.tiny_flamingo_config("clip", "llama"), tokens_per_image=1)
