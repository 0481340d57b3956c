import pytest
import torch
import torch.nn.functional as F

from hf_mm import HfMmClipProcessor, from_transformers_clip
from hf_mm import testing as T
from hf_mm.eval import embed_texts, retrieval_recall, zero_shot_classifier
from tests.modeling.helpers import tiny_clip


@pytest.fixture(scope="module")
def clip():
    model, _ = from_transformers_clip(tiny_clip())
    return model, HfMmClipProcessor(image_processor=T.tiny_image_processor("clip"), tokenizer=T.tiny_tokenizer())


def test_prompt_ensembling_averages_normalised_template_embeddings(clip):
    model, processor = clip
    templates = ["a photo of a {}.", "a {} shape"]
    classifier = zero_shot_classifier(model, processor, ["red", "blue"], templates)
    red = embed_texts(model, processor, [t.format("red") for t in templates])
    torch.testing.assert_close(classifier.weights[0], F.normalize(red.mean(0), dim=-1))
    images = T.random_images(3)
    logits = classifier(images)
    assert logits.shape == (3, 2)
    assert classifier.predict(images) == [["red", "blue"][i] for i in logits.argmax(1).tolist()]


@pytest.mark.parametrize(
    "names, templates, message",
    [([], ["a {}"], "class_names is empty"), (["a"], [], "templates is empty"), (["a"], ["a photo"], "no '{}'")],
)
def test_bad_classifier_inputs_are_named(clip, names, templates, message):
    with pytest.raises(ValueError, match=message):
        zero_shot_classifier(*clip, names, templates)


def test_retrieval_recall_counts_hits_both_ways():
    images = torch.eye(3)
    # Texts 0,1 are image 0's captions, text 2 is image 1's, text 3 is image 2's but lies closer to image 1.
    texts = F.normalize(torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 1.0, 0.5]]), dim=-1)
    recall = retrieval_recall(images, texts, [0, 0, 1, 2], ks=(1, 2))
    assert recall["text_to_image/R@1"] == 0.75 and recall["text_to_image/R@2"] == 1.0
    # Each image's nearest text is one of its own captions (image 2's only neighbour is text 3).
    assert recall["image_to_text/R@1"] == 1.0
    with pytest.raises(ValueError, match="text_to_image has 3 entries for 4 texts"):
        retrieval_recall(images, texts, [0, 0, 1])
