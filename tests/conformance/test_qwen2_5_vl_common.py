"""transformers' `ModelTesterMixin` on hf_mm_qwen2_5_vl (the native-resolution ViT, its merger, a Qwen2 LM with
M-RoPE), modelled on transformers' tests/models/qwen2_5_vl. Skips are transformers' own for Qwen2.5-VL."""

import unittest

from hf_mm import testing as T
from hf_mm.modeling.qwen2_5_vl import HfMmQwen2_5_VLForConditionalGeneration, HfMmQwen2_5_VLModel

from .sdist import common_tests
from .testers import NO_PIXELS, QwenVLTester, declare_auto_classes, skip_mixin_tests

common = common_tests()
declare_auto_classes(common, T.tiny_qwen2_5_vl_config())


@skip_mixin_tests("test_eager_matches_sdpa_inference", "test_model_rope_scaling_from_config", reason=NO_PIXELS)
class HfMmQwen2_5_VLCommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmQwen2_5_VLModel, HfMmQwen2_5_VLForConditionalGeneration)
    _is_composite = True

    def setUp(self):
        self.model_tester = QwenVLTester(self, T.tiny_qwen2_5_vl_config)
