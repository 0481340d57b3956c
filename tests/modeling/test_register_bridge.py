"""A bridge defined outside hf_mm: registered with `hf_mm.register_bridge`, composed between pretrained towers,
trained one step, saved, and reloaded through `AutoModelForImageTextToText`. The bridge owns its settings (from
`bridge_kwargs`), its tokens-per-image rule (which the processor uses) and its initialisation."""

import pytest
import torch
from torch import nn
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers import initialization as init

import hf_mm
from hf_mm import testing as T


class PooledBridge(hf_mm.Bridge):
    """Average-pool the patches to `num_tokens` tokens, then one linear map: a fixed count per image."""

    def __init__(self, in_features: int, out_features: int, num_tokens: int = 4):
        super().__init__()
        self.num_tokens = num_tokens
        self.proj = nn.Linear(in_features, out_features)
        self.scale = nn.Parameter(torch.zeros(out_features))

    @classmethod
    def tokens_per_image(cls, settings: dict, height: int, width: int, prefix_tokens: int = 0) -> int:
        return settings.get("num_tokens", 4)

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        init.ones_(self.scale)  # a fresh bridge starts as a plain projection

    def forward(self, image_features, grid_size=None):
        x = image_features.to(self.proj.weight.dtype).transpose(1, 2)  # (B, D, N)
        pooled = nn.functional.adaptive_avg_pool1d(x, self.num_tokens).transpose(1, 2)  # (B, n, D)
        return self.proj(pooled) * self.scale


hf_mm.register_bridge("pooled", PooledBridge)


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("plug_in_towers")
    return T.save_tiny_vision_tower(root / "vision"), T.save_tiny_causal_lm(root / "text")


def test_a_registered_bridge_composes_trains_saves_and_reloads(towers, tmp_path):
    settings = {"bridge_type": "pooled", "bridge_kwargs": {"num_tokens": 3}}
    model = hf_mm.HfMmLlavaForConditionalGeneration.from_vision_text_pretrained(*towers, **settings)
    processor = hf_mm.HfMmLlavaProcessor.from_vision_text_pretrained(*towers, **settings)
    assert isinstance(model.model.bridge, PooledBridge) and model.model.bridge.num_tokens == 3
    assert torch.equal(model.model.bridge.scale, torch.ones_like(model.model.bridge.scale))  # its own init ran
    assert 0.01 < model.model.bridge.proj.weight.std() < 0.03  # N(0, the LM's initializer_range)

    inputs = processor(images=T.random_images(2), text=["<image>a red square", "<image>two cats"], padding=True,
                       return_tensors="pt")  # fmt: skip
    assert (inputs["input_ids"] == model.config.image_token_id).sum(1).tolist() == [3, 3]  # the bridge's rule
    model.train()
    before = model.model.bridge.proj.weight.detach().clone()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    optimizer.step()
    assert not torch.equal(model.model.bridge.proj.weight, before)

    model.eval().save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert type(reloaded.model.bridge) is PooledBridge and reloaded.config.bridge_kwargs == {"num_tokens": 3}
    assert AutoProcessor.from_pretrained(tmp_path).num_image_tokens(32, 32) == 3
    with torch.no_grad():
        assert torch.equal(reloaded(**inputs).logits, model(**inputs).logits)


def test_a_setting_the_bridge_does_not_take_is_refused_by_name():
    config = T.tiny_llava_config("clip", "llama", "pooled", bridge_kwargs={"num_tokens": 2, "dropout": 0.1})
    with pytest.raises(ValueError, match=r"bridge_kwargs \['dropout'\] are not settings of bridge_type='pooled'"):
        hf_mm.HfMmLlavaForConditionalGeneration(config)


def test_register_bridge_refuses_what_is_not_a_bridge_or_taken():
    with pytest.raises(TypeError, match="subclass of hf_mm.modeling.bridges.Bridge"):
        hf_mm.register_bridge("plain", nn.Linear)
    with pytest.raises(ValueError, match="already registered"):
        hf_mm.register_bridge("linear", PooledBridge)
    with pytest.raises(ValueError, match="hf_mm.register_bridge adds one"):
        hf_mm.HfMmLlavaConfig(vision_config=T.tiny_vision_config("clip"), text_config=T.tiny_text_config("llama"),
                              bridge_type="unknown")  # fmt: skip
