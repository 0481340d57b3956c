"""Tiny towers, a tokenizer built in code, and tiny saved checkpoints: for hf_mm's tests and for users' own.

Nothing here touches the network. Every vision tower sees 32x32 images in 8x8 patches (a 4x4 grid, 16 patches),
every tower is 32 wide with 2 layers, and the tokenizer is a byte-level BPE trained on a few sentences in code.
"""

from __future__ import annotations

import os

import numpy as np
import PIL.Image
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    Blip2QFormerConfig,
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextConfig,
    CLIPVisionConfig,
    Dinov2Config,
    GPT2Config,
    LlamaConfig,
    OPTConfig,
    Qwen2Config,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    ViTConfig,
    ViTImageProcessorPil,
)

from .data.tokenizers import DEFAULT_CORPUS, EOS_ID, EOS_TOKEN, PAD_ID, PAD_TOKEN, tiny_tokenizer  # noqa: F401  (public here)
from .modeling.blip2 import HfMmBlip2Config
from .modeling.clip import HfMmClipConfig
from .modeling.flamingo import HfMmFlamingoConfig
from .modeling.llava import HfMmLlavaConfig
from .modeling.qwen2_5_vl import HfMmQwen2_5_ViTConfig, HfMmQwen2_5_VLConfig
from .processing import (
    HfMmBlip2Processor,
    HfMmClipProcessor,
    HfMmFlamingoProcessor,
    HfMmLlavaProcessor,
    HfMmQwen2_5_VLImageProcessor,
    HfMmQwen2_5_VLProcessor,
    prepare_flamingo_tokenizer,
    prepare_qwen_tokenizer,
    prepare_tokenizer,
)

IMAGE_SIZE = 32
PATCH_SIZE = 8
HIDDEN = 32
TEXT_VOCAB_SIZE = 352  # the BPE below has 320 entries; the LM vocab is padded past it, as real LMs' often are

VISION_TOWERS = ("clip", "siglip", "vit", "dinov2")
TEXT_MODELS = ("llama", "qwen2", "gpt2", "opt")


def tiny_vision_config(kind: str):
    """A 2-layer, 32-wide vision encoder config of `kind` in `VISION_TOWERS` (32px images, 8px patches)."""
    common = dict(hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2, image_size=IMAGE_SIZE)
    common["patch_size"] = PATCH_SIZE
    if kind == "clip":
        return CLIPVisionConfig(intermediate_size=64, projection_dim=HIDDEN, **common)
    if kind == "siglip":
        return SiglipVisionConfig(intermediate_size=64, **common)
    if kind == "vit":
        return ViTConfig(intermediate_size=64, **common)
    if kind == "dinov2":
        return Dinov2Config(mlp_ratio=2, **common)
    raise ValueError(f"Unknown tiny vision tower {kind!r}. Allowed: {VISION_TOWERS}.")


def tiny_text_config(kind: str, vocab_size: int = TEXT_VOCAB_SIZE):
    """A 2-layer, 32-wide causal LM config of `kind` in `TEXT_MODELS`."""
    ids = dict(bos_token_id=EOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID)
    if kind in ("llama", "qwen2"):
        cls = LlamaConfig if kind == "llama" else Qwen2Config
        return cls(
            vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
            tie_word_embeddings=kind == "qwen2", **ids,
        )  # fmt: skip
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=HIDDEN, n_layer=2, n_head=2, n_positions=512, **ids)
    if kind == "opt":
        return OPTConfig(
            vocab_size=vocab_size, hidden_size=HIDDEN, word_embed_proj_dim=HIDDEN, ffn_dim=64, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=512, **ids,
        )  # fmt: skip
    raise ValueError(f"Unknown tiny text model {kind!r}. Allowed: {TEXT_MODELS}.")


def tiny_image_processor(kind: str):
    """The image processor each tower type ships with, at 32x32."""
    square = {"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    if kind in ("clip", "dinov2"):  # DINOv2 ships a BitImageProcessor: the same resize + center-crop as CLIP
        return CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE}, crop_size=square)
    if kind == "siglip":
        return SiglipImageProcessorPil(size=square)
    if kind == "vit":
        return ViTImageProcessorPil(size=square)
    raise ValueError(f"Unknown tiny vision tower {kind!r}. Allowed: {VISION_TOWERS}.")


def tiny_llava_config(vision: str = "clip", text: str = "llama", bridge_type: str = "mlp2x_gelu", **kwargs):
    """A tiny HfMmLlavaConfig whose `image_token_id` matches `tiny_llava_processor`'s tokenizer."""
    tokenizer = prepare_tokenizer(tiny_tokenizer())
    kwargs.setdefault("vision_feature_select_strategy", "default")
    perceiver = dict(perceiver_num_latents=8, perceiver_depth=2, perceiver_heads=2, perceiver_head_dim=16)
    kwargs = {**perceiver, "adapter_num_queries": 9, "adapter_heads": 2, **kwargs}
    return HfMmLlavaConfig(
        vision_config=tiny_vision_config(vision),
        text_config=tiny_text_config(text),
        bridge_type=bridge_type,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        **kwargs,
    )


def tiny_llava_processor(config: HfMmLlavaConfig, vision: str = "clip") -> HfMmLlavaProcessor:
    """The processor matching a tiny config: the tower's image processor and the prepared tiny tokenizer."""
    tokenizer = prepare_tokenizer(tiny_tokenizer())
    return HfMmLlavaProcessor.from_llava_config(config, tiny_image_processor(vision), tokenizer)


def tiny_qformer_config(instruction_aware: bool = False, **kwargs) -> Blip2QFormerConfig:
    """A 2-layer, 32-wide Q-Former (cross-attention in layer 0 only) over the tiny tokenizer's vocabulary."""
    settings = dict(
        vocab_size=len(tiny_tokenizer()), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=128, cross_attention_frequency=2, pad_token_id=PAD_ID,
        use_qformer_text_input=instruction_aware,
    )  # fmt: skip
    return Blip2QFormerConfig(**{**settings, **kwargs})


def tiny_blip2_config(
    vision: str = "clip", text: str = "llama", num_query_tokens: int = 4, instruction_aware: bool = False, **kwargs
) -> HfMmBlip2Config:
    """A tiny HfMmBlip2Config whose `image_token_id` matches `tiny_blip2_processor`'s tokenizer."""
    tokenizer = prepare_tokenizer(tiny_tokenizer())
    kwargs.setdefault("qformer_config", tiny_qformer_config(instruction_aware))
    return HfMmBlip2Config(
        vision_config=tiny_vision_config(vision),
        text_config=tiny_text_config(text),
        num_query_tokens=num_query_tokens,
        image_text_hidden_size=HIDDEN,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        **kwargs,
    )


def tiny_blip2_processor(config: HfMmBlip2Config, vision: str = "clip") -> HfMmBlip2Processor:
    """The processor matching a tiny BLIP-2 config; the Q-Former reads the plain tiny tokenizer."""
    tokenizer = prepare_tokenizer(tiny_tokenizer())
    return HfMmBlip2Processor.from_blip2_config(config, tiny_image_processor(vision), tokenizer, tiny_tokenizer())


def tiny_flamingo_config(vision: str = "clip", text: str = "llama", **kwargs) -> HfMmFlamingoConfig:
    """A tiny HfMmFlamingoConfig (8 latents, a gated block before every decoder layer) matching
    `tiny_flamingo_processor`'s tokenizer."""
    tokenizer = prepare_flamingo_tokenizer(tiny_tokenizer())
    settings = dict(
        num_latents=8, perceiver_depth=2, perceiver_heads=2, perceiver_head_dim=16, cross_attn_every_n_layers=1,
        cross_attn_heads=2, cross_attn_head_dim=16, cross_attn_ff_mult=2,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        end_of_chunk_token_id=tokenizer.convert_tokens_to_ids("<|endofchunk|>"),
    )  # fmt: skip
    settings = {"vision_config": tiny_vision_config(vision), "text_config": tiny_text_config(text), **settings}
    return HfMmFlamingoConfig(**{**settings, **kwargs})


def tiny_flamingo_processor(config: HfMmFlamingoConfig | None = None, vision: str = "clip") -> HfMmFlamingoProcessor:
    """The processor matching `tiny_flamingo_config`: the tower's image processor and the prepared tiny tokenizer
    (`config` is accepted for symmetry with the other families; Flamingo's processor needs nothing from it)."""
    return HfMmFlamingoProcessor(tiny_image_processor(vision), prepare_flamingo_tokenizer(tiny_tokenizer()))


def tiny_clip_config(**kwargs) -> HfMmClipConfig:
    """A tiny dual encoder: the tiny CLIP vision tower and a 2-layer CLIP text tower over the tiny tokenizer,
    projected to 24."""
    text = CLIPTextConfig(vocab_size=TEXT_VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2,
                          num_attention_heads=2, max_position_embeddings=64, bos_token_id=EOS_ID, eos_token_id=EOS_ID)  # fmt: skip
    settings = {"vision_config": tiny_vision_config("clip"), "text_config": text, "projection_dim": 24}
    return HfMmClipConfig(**{**settings, **kwargs})


def tiny_clip_processor(config: HfMmClipConfig | None = None) -> HfMmClipProcessor:
    """The processor matching `tiny_clip_config`: CLIP's image processor and the tiny tokenizer."""
    return HfMmClipProcessor(image_processor=tiny_image_processor("clip"), tokenizer=tiny_tokenizer())


def tiny_model_and_processor(family: str, **config_kwargs):
    """A randomly initialised tiny model of any registered family (its generative class, or its dual encoder) and
    the matching processor; the family registry names each family's tiny builders."""
    from .families import get_family

    entry = get_family(family)
    if entry.tiny is None:
        raise ValueError(f"family={family!r} declares no tiny builders in its registry entry.")
    config = entry.tiny_config(**config_kwargs)
    return (entry.generation_class or entry.model_class)(config), entry.tiny_processor(config)


def tiny_qwen2_5_vit_config(**kwargs) -> HfMmQwen2_5_ViTConfig:
    """A 2-block, 32-wide native-resolution ViT (block 1 full attention, block 0 windowed), merging into width 32."""
    settings = dict(depth=2, hidden_size=HIDDEN, intermediate_size=64, num_heads=2, out_hidden_size=HIDDEN)
    return HfMmQwen2_5_ViTConfig(**{**settings, "fullatt_block_indexes": [1], **kwargs})


def tiny_qwen2_5_vl_config(text: str = "qwen2", **kwargs) -> HfMmQwen2_5_VLConfig:
    """A tiny HfMmQwen2_5_VLConfig (head_dim 8, so `mrope_section` [2, 1, 1]) whose vision token ids match
    `tiny_qwen2_5_vl_processor`'s tokenizer."""
    tokenizer = prepare_qwen_tokenizer(tiny_tokenizer())
    names = {"image": "<|image_pad|>", "video": "<|video_pad|>", "vision_start": "<|vision_start|>"}
    ids = {f"{key}_token_id": tokenizer.convert_tokens_to_ids(token) for key, token in names.items()}
    settings = dict(
        vision_config=tiny_qwen2_5_vit_config(), text_config=tiny_text_config(text), mrope_section=[2, 1, 1]
    )
    return HfMmQwen2_5_VLConfig(**{**settings, **ids, **kwargs})


def tiny_qwen2_5_vl_processor(config: HfMmQwen2_5_VLConfig | None = None) -> HfMmQwen2_5_VLProcessor:
    """The processor matching `tiny_qwen2_5_vl_config`: Qwen's image processor and the prepared tiny tokenizer."""
    tokenizer = prepare_qwen_tokenizer(tiny_tokenizer())
    return HfMmQwen2_5_VLProcessor(image_processor=HfMmQwen2_5_VLImageProcessor(), tokenizer=tokenizer)


def train_tiny_causal_lm(
    path: str | os.PathLike, make_chat, steps: int = 400, kind: str = "llama", prepare=prepare_tokenizer, seed: int = 0
) -> str:
    """Train a tiny causal LM on chats and save it with its tokenizer (prepared by `prepare`) to `path`.

    `make_chat(rng)` returns one conversation (messages) drawn with the `random.Random` it is given. Frozen-LLM
    recipes (BLIP-2 stage 2, Flamingo) need an LLM that already knows the language: a random LM's flat output
    cannot be steered by a soft prompt or a gated block, where a pretrained one can.
    """
    import random

    import torch

    tokenizer = prepare(tiny_tokenizer())
    tokenizer.padding_side = "right"
    torch.manual_seed(seed)
    lm = AutoModelForCausalLM.from_config(tiny_text_config(kind, vocab_size=len(tokenizer)))
    optimizer, rng = torch.optim.AdamW(lm.parameters(), lr=3e-3), random.Random(seed)
    for _ in range(steps):
        chats = [tokenizer.apply_chat_template(make_chat(rng), tokenize=False) for _ in range(32)]
        batch = tokenizer(chats, return_tensors="pt", padding=True)
        lm(**batch, labels=batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lm.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


def random_images(n: int, seed: int = 0, size: tuple[int, int] = (40, 48)) -> list[PIL.Image.Image]:
    """`n` random RGB images (height, width = size) from a seeded generator."""
    rng = np.random.default_rng(seed)
    return [PIL.Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def save_tiny_vision_tower(path: str | os.PathLike, kind: str = "clip") -> str:
    """Save a randomly initialised tiny vision encoder and its image processor to `path`; returns `path`."""
    AutoModel.from_config(tiny_vision_config(kind)).save_pretrained(path)
    tiny_image_processor(kind).save_pretrained(path)
    return str(path)


def save_tiny_qwen2_5_vit(path: str | os.PathLike) -> str:
    """Save a randomly initialised tiny native-resolution ViT and its image processor (small images: at most 56x56
    pixels, 4 merged tokens each) to `path`; returns `path`."""
    AutoModel.from_config(tiny_qwen2_5_vit_config()).save_pretrained(path)
    HfMmQwen2_5_VLImageProcessor(size={"shortest_edge": 3136, "longest_edge": 3136}).save_pretrained(path)
    return str(path)


def save_tiny_dual_encoder(path: str | os.PathLike) -> str:
    """Save a tiny CLIPModel (vision + text towers) and its image processor, as a dual-encoder checkpoint."""
    vision = tiny_vision_config("clip").to_dict()
    text = dict(vocab_size=TEXT_VOCAB_SIZE, hidden_size=HIDDEN, intermediate_size=64, num_hidden_layers=2)
    config = CLIPConfig(vision_config=vision, text_config=dict(text, num_attention_heads=2), projection_dim=HIDDEN)
    CLIPModel(config).save_pretrained(path)
    tiny_image_processor("clip").save_pretrained(path)
    return str(path)


def save_tiny_causal_lm(path: str | os.PathLike, kind: str = "llama") -> str:
    """Save a randomly initialised tiny causal LM and the tiny tokenizer (as an LM ships it) to `path`.

    The vocabulary is exactly the tokenizer's, as in Llama-2, so composing a VLM must resize the embeddings.
    """
    tokenizer = tiny_tokenizer()
    AutoModelForCausalLM.from_config(tiny_text_config(kind, vocab_size=len(tokenizer))).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)


__all__ = [
    "VISION_TOWERS",
    "TEXT_MODELS",
    "tiny_vision_config",
    "tiny_text_config",
    "tiny_image_processor",
    "tiny_tokenizer",
    "tiny_llava_config",
    "tiny_llava_processor",
    "tiny_qformer_config",
    "tiny_blip2_config",
    "tiny_blip2_processor",
    "tiny_flamingo_config",
    "tiny_flamingo_processor",
    "random_images",
    "save_tiny_vision_tower",
    "save_tiny_dual_encoder",
    "save_tiny_causal_lm",
    "train_tiny_causal_lm",
]
