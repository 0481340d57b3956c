"""Builders shared by the modeling tests (kept out of test modules, which import no fixtures from each other)."""

import re

from transformers import CLIPConfig, CLIPModel

from hf_mm import testing as T

PAIRS = [("clip", "llama"), ("siglip", "qwen2"), ("vit", "gpt2"), ("dinov2", "opt")]


UNUSED_TOWER_PARTS = re.compile(
    r"^model\.vision_tower\.(vision_model\.)?(post_layernorm|layernorm|pooler|head|embeddings\.mask_token)\b"
)


def batch_inputs(processor, images_per_sample=(2, 1), seed=0):
    """A left-padded batch: sample 0 has `images_per_sample[0]` images, sample 1 the rest, texts of unequal length."""
    texts = [
        "<image>" * images_per_sample[0] + "compare the two pictures in detail please",
        "<image>" * images_per_sample[1] + "what is it?",
    ]
    processor.tokenizer.padding_side = "left"
    images = T.random_images(sum(images_per_sample), seed=seed)
    return dict(processor(images=images, text=texts, padding=True, return_tensors="pt"))


def make_case(vision, text, bridge, **config_kwargs):
    config = T.tiny_llava_config(vision, text, bridge, **config_kwargs)
    processor = T.tiny_llava_processor(config, vision)
    return config, processor, batch_inputs(processor)


TEXT = dict(vocab_size=T.TEXT_VOCAB_SIZE, hidden_size=32, intermediate_size=64, num_hidden_layers=2)


def tiny_clip() -> CLIPModel:
    config = CLIPConfig(vision_config=T.tiny_vision_config("clip").to_dict(), text_config=TEXT, projection_dim=24)
    return CLIPModel(config).eval()
