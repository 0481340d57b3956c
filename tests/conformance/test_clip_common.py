"""transformers' `ModelTesterMixin` on hf_mm_clip (a CLIP vision tower and a CLIP text tower with projections),
modelled on transformers' tests/models/clip CLIPModelTest. Skips are transformers' own for CLIPModel."""

import unittest

from hf_mm import HfMmClipModel
from tests.conformance.testers import tiny_clip_config

from .sdist import common_tests
from .testers import DualEncoderTester, declare_auto_classes, skip_mixin_tests

common = common_tests()
declare_auto_classes(common, tiny_clip_config())


# transformers' CLIPModelTest replaces this test with its own (it needs text and images together).
@skip_mixin_tests(
    "test_eager_matches_sdpa_inference",
    reason="needs text and image inputs together; covered with both in tests/conformance/test_with_images.py",
)
class HfMmClipCommonTest(common.ModelTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmClipModel,)
    _is_composite = True

    def setUp(self):
        self.model_tester = DualEncoderTester(self, tiny_clip_config)

    test_resize_embeddings = False  # transformers' CLIPModelTest sets the same

    @unittest.skip(
        reason="CLIPModel's eager/SDPA check needs both text and image inputs; covered with images in tests/conformance/test_with_images.py"
    )
    def test_eager_matches_sdpa_inference(self):
        pass

    # transformers' CLIPModelTest sets `test_attention_outputs = False` (each tower's attentions are in
    # `text_model_output` / `vision_model_output`, as in CLIPOutput; there is no top-level `attentions`).
    @unittest.skip(reason="CLIPModel outputs each tower's attentions in text_model_output / vision_model_output")
    def test_attention_outputs(self):
        pass

    @unittest.skip(reason="Hidden_states is tested in individual model tests")
    def test_hidden_states_output(self):
        pass

    @unittest.skip(reason="Retain_grad is tested in individual model tests")
    def test_retain_grad_hidden_states_attentions(self):
        pass

    @unittest.skip(reason="CLIPModel does not have input/output embeddings")
    def test_model_get_set_embeddings(self):
        pass
