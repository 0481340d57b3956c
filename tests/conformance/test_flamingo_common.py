"""transformers' `ModelTesterMixin` on hf_mm_flamingo (CLIP tower, perceiver resampler, gated blocks before every
Llama layer). transformers has no Flamingo; its Flamingo-style model is Idefics, whose skips apply here."""

import unittest

from hf_mm import testing as T
from hf_mm.modeling.compat import enable_activation_checkpointing
from hf_mm.modeling.flamingo import HfMmFlamingoForConditionalGeneration, HfMmFlamingoModel

from .sdist import common_tests
from .testers import NO_PIXELS, PrefixVLMTester, declare_auto_classes, skip_mixin_tests

IDEFICS_GC = (
    "This architecure seem to not compute gradients properly when using GC, check: "
    "https://github.com/huggingface/transformers/pull/27124"
)

common = common_tests()
declare_auto_classes(common, T.tiny_flamingo_config())


@skip_mixin_tests("test_eager_matches_sdpa_inference", "test_model_rope_scaling_from_config", reason=NO_PIXELS)
class HfMmFlamingoCommonTest(common.ModelTesterMixin, common.GenerationTesterMixin, unittest.TestCase):
    all_model_classes = (HfMmFlamingoModel, HfMmFlamingoForConditionalGeneration)
    _is_composite = True

    # The gates' conversion (0-d checkpoints' gates load as (1,)) reshapes without renaming any key, like
    # transformers' Qwen3-VL-MoE and GPT-OSS Transpose conversions, whose tests pass the same flag.
    def test_reverse_loading_mapping(self, check_keys_were_modified=False):
        super().test_reverse_loading_mapping(check_keys_were_modified)

    def setUp(self):
        # One <image> token per image: Flamingo's text keeps a single marker, the media enter by cross-attention.
        self.model_tester = PrefixVLMTester(self, lambda: T.tiny_flamingo_config("clip", "llama"), tokens_per_image=1)

    # Idefics (transformers' Flamingo-style model) skips the two re-entrancy variants (5.23 renamed
    # `..._use_reentrant` to `..._use_reentrant_true`) and replaces the plain one with a backward pass under
    # checkpointing, as below: the perceiver's frame embeddings serve video only and get no gradient from images.
    @unittest.skip(reason=IDEFICS_GC)
    def test_training_gradient_checkpointing_use_reentrant_true(self):
        pass

    @unittest.skip(reason=IDEFICS_GC)
    def test_training_gradient_checkpointing_use_reentrant_false(self):
        pass

    def test_training_gradient_checkpointing(self):
        config, inputs = self.model_tester.prepare_config_and_inputs_for_common()
        config.use_cache = False
        model = HfMmFlamingoForConditionalGeneration(config)
        enable_activation_checkpointing(model)
        model.train()
        inputs = self._prepare_for_class(inputs, HfMmFlamingoForConditionalGeneration, return_labels=True)
        model(**inputs).loss.backward()
        self.assertTrue(model.model.bridge.gated_cross_attn[0].attn_gate.grad is not None)
