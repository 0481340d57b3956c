"""Zero-shot classification and retrieval for dual encoders (hf_mm_clip, or anything with CLIP's feature API).

- `zero_shot_classifier(model, processor, class_names, templates)`: CLIP's prompt ensembling. Each class embedding
  is the mean of the L2-normalised text embeddings of its templates ("a photo of a {}.", or a callable from the
  class name to a prompt), normalised again.
- `retrieval_recall(image_embeds, text_embeds, text_to_image)`: recall@k in both directions. An image may have
  several captions (`text_to_image[t]` is the image of text t); image->text counts a hit when any of its captions is
  in the top k, as in the COCO/Flickr protocol.
"""

import torch
import torch.nn.functional as F


def _embedding(features) -> torch.Tensor:
    """The embedding of a `get_*_features` result: v5 outputs carry it as `pooler_output`."""
    return features.pooler_output if hasattr(features, "pooler_output") else features


@torch.no_grad()
def embed_images(model, processor, images: list, batch_size: int = 64) -> torch.Tensor:
    """(N, D) L2-normalised image embeddings."""
    out = []
    for start in range(0, len(images), batch_size):
        pixels = processor(images=images[start : start + batch_size], return_tensors="pt")["pixel_values"]
        out.append(F.normalize(_embedding(model.get_image_features(pixel_values=pixels.to(model.device))), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def embed_texts(model, processor, texts: list[str], batch_size: int = 256) -> torch.Tensor:
    """(N, D) L2-normalised text embeddings."""
    out = []
    for start in range(0, len(texts), batch_size):
        tokens = processor(text=texts[start : start + batch_size], padding=True, truncation=True, return_tensors="pt")
        features = model.get_text_features(
            tokens["input_ids"].to(model.device), tokens["attention_mask"].to(model.device)
        )
        out.append(F.normalize(_embedding(features), dim=-1))
    return torch.cat(out)


def _fill(template, class_name: str) -> str:
    return template(class_name) if callable(template) else template.format(class_name)


class ZeroShotClassifier:
    """Class embeddings from prompt ensembling; call it on images to get (N, n_classes) logits."""

    def __init__(self, model, processor, class_names: list[str], templates: list[str]):
        if not class_names:
            raise ValueError("class_names is empty: give at least one class name, e.g. ['cat', 'dog'].")
        if not templates:
            raise ValueError("templates is empty: give at least one, e.g. ['a photo of a {}.'].")
        bad = [template for template in templates if not callable(template) and "{}" not in template]
        if bad:
            raise ValueError(f"templates {bad} have no '{{}}' where the class name goes, e.g. 'a photo of a {{}}.'.")
        self.model, self.processor, self.class_names = model, processor, list(class_names)
        texts = [_fill(template, name) for name in class_names for template in templates]
        per_template = embed_texts(model, processor, texts).view(len(class_names), len(templates), -1)
        self.weights = F.normalize(per_template.mean(dim=1), dim=-1)  # (n_classes, D)

    def __call__(self, images: list) -> torch.Tensor:
        return embed_images(self.model, self.processor, images) @ self.weights.t()

    def predict(self, images: list) -> list[str]:
        return [self.class_names[i] for i in self(images).argmax(dim=-1).tolist()]


def zero_shot_classifier(model, processor, class_names: list[str], templates: list[str]) -> ZeroShotClassifier:
    return ZeroShotClassifier(model, processor, class_names, templates)


def retrieval_recall(
    image_embeds: torch.Tensor,
    text_embeds: torch.Tensor,
    text_to_image: list[int],
    ks=(1, 5, 10),
    image_labels: list[int] | None = None,
) -> dict[str, float]:
    """Recall@k for image->text and text->image from normalised embeddings (N_img, D) and (N_txt, D).

    By default `text_to_image[t]` is the index of text t's image (instance retrieval). With `image_labels`, both are
    class labels and any item of the right class is a hit (class-level retrieval, for datasets such as digits where
    many images share one caption's meaning).
    """
    if len(text_to_image) != text_embeds.shape[0]:
        raise ValueError(
            f"text_to_image has {len(text_to_image)} entries for {text_embeds.shape[0]} texts; give each text's image."
        )
    return recall_at_k(image_embeds @ text_embeds.t(), text_to_image, ks, image_labels)


def recall_at_k(
    similarity: torch.Tensor, text_to_image: list[int], ks=(1, 5, 10), image_labels: list[int] | None = None
) -> dict[str, float]:
    """`retrieval_recall` from a (N_img, N_txt) similarity matrix, for models whose score is not a dot product of
    two embeddings (BLIP-2's best query per text)."""
    text_labels = torch.as_tensor(text_to_image)
    image_labels = torch.arange(similarity.shape[0]) if image_labels is None else torch.as_tensor(image_labels)
    results = {}
    for k in ks:
        top_images = similarity.t().topk(min(k, similarity.shape[0]), dim=1).indices  # (N_txt, k)
        hits = image_labels[top_images] == text_labels[:, None]
        results[f"text_to_image/R@{k}"] = hits.any(1).float().mean().item()
        top_texts = similarity.topk(min(k, similarity.shape[1]), dim=1).indices  # (N_img, k)
        hits = text_labels[top_texts] == image_labels[:, None]
        results[f"image_to_text/R@{k}"] = hits.any(1).float().mean().item()
    return results


__all__ = [
    "ZeroShotClassifier",
    "embed_images",
    "embed_texts",
    "recall_at_k",
    "retrieval_recall",
    "zero_shot_classifier",
]
