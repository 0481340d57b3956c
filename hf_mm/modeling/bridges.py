"""Prefix bridges: vision features in, LM-width tokens out.

Every bridge maps `(B, N, D_vision)` patch features on a `(h, w)` grid to `(B, N_out, D_text)` tokens that the
model scatters into the `<image>` placeholders of the LM input. One class per mechanism, registered by name in
`BRIDGES` (`register_bridge` adds one from outside the package). Each class owns its rules (`Bridge`):
- its settings: `config_fields` maps the family config's fields to its constructor's keywords (a plug-in bridge
  reads `config.bridge_kwargs` instead);
- its tokens-per-image rule, `tokens_per_image(settings, h, w, prefix_tokens)`, which the processor uses to expand
  `<image>` (no second copy of the rule anywhere);
- its weight initialisation, `init_weights(std)`.

Contract for `forward(image_features, grid_size)`: `(B, N, D_in)` features and the patch grid `(h, w)`, with
`N == h * w` for bridges that use the grid, to `(B, tokens_per_image(...), D_out)`. The input is cast to the bridge's
own weight dtype first: TRL's QLoRA path casts trainable parameters to bf16 while the frozen tower may still emit
fp32.
"""

from __future__ import annotations

import inspect
from typing import ClassVar

import torch
from torch import nn
from transformers import initialization as init


class Bridge(nn.Module):
    """The base of every prefix bridge: `__init__(in_features, out_features, **settings)` plus the three rules."""

    config_fields: ClassVar[dict[str, str]] = {}  # family config field -> constructor keyword

    @classmethod
    def settings(cls, config) -> dict:
        """The constructor keywords for `config`: this bridge's fields of the family config, then the entries of
        `config.bridge_kwargs` (how a plug-in bridge gets its settings)."""
        own = {
            keyword: getattr(config, field) for field, keyword in cls.config_fields.items() if hasattr(config, field)
        }
        return {**own, **(getattr(config, "bridge_kwargs", None) or {})}

    @classmethod
    def from_config(cls, config, in_features: int, out_features: int) -> Bridge:
        settings = cls.settings(config)
        accepted = set(inspect.signature(cls.__init__).parameters) - {"self", "in_features", "out_features"}
        unknown = sorted(set(settings) - accepted)
        if unknown:
            raise ValueError(
                f"bridge_kwargs {unknown} are not settings of bridge_type={config.bridge_type!r}: "
                f"{cls.__name__} takes {sorted(accepted)}."
            )
        return cls(in_features, out_features, **settings)

    @classmethod
    def tokens_per_image(cls, settings: dict, height: int, width: int, prefix_tokens: int = 0) -> int:
        """Tokens one image becomes for a `height` x `width` patch grid (plus the tower's kept CLS/register
        tokens): one per patch unless a bridge says otherwise."""
        return height * width + prefix_tokens

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        """Every linear map N(0, std) with zero bias, as LLaVA's projector in transformers, so a fresh bridge emits
        small features of the LM's embedding scale; LayerNorms at identity. Guarded: weights a checkpoint filled
        are left alone."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                init.normal_(module.weight, mean=0.0, std=std)
                if module.bias is not None:
                    init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):  # the packed q/k/v projection is no nn.Linear
                init.normal_(module.in_proj_weight, mean=0.0, std=std)
                init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.LayerNorm):
                init.ones_(module.weight)
                init.zeros_(module.bias)


class LinearBridge(Bridge):
    """LLaVA-1: one linear map from the vision width to the LM width."""

    config_fields = {"bridge_bias": "bias"}

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.linear(image_features.to(self.linear.weight.dtype))  # (B, N, D_text)


class Mlp2xGeluBridge(Bridge):
    """LLaVA-1.5: Linear -> GELU (exact) -> Linear, the `mlp2x_gelu` projector.

    Parameter names `linear_1` / `linear_2` match transformers' `LlavaMultiModalProjector`, so converted
    checkpoints map one to one.
    """

    config_fields = {"bridge_bias": "bias", "bridge_hidden_size": "hidden_size"}

    def __init__(self, in_features: int, out_features: int, bias: bool = True, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or out_features
        self.linear_1 = nn.Linear(in_features, hidden_size, bias=bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, out_features, bias=bias)

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        hidden_states = self.linear_1(image_features.to(self.linear_1.weight.dtype))
        return self.linear_2(self.act(hidden_states))  # (B, N, D_text)


class PixelShuffleBridge(Bridge):
    """Concatenate each s x s neighbourhood of patches, then an MLP (MiniGPT-v2, Idefics3, Kimi-VL, nanoVLM).

    The grid must divide by `factor` on both sides; the output has `N / s^2` tokens, each of width `s^2 * D_in`
    before the MLP. Neighbourhoods are read row-major within the block, so the concatenation order is
    (row 0: col 0, col 1, ..., row 1: ...), matching MiniGPT-v2's "4 adjacent tokens" for s = 2.
    """

    config_fields = {"bridge_bias": "bias", "bridge_hidden_size": "hidden_size", "pixel_shuffle_factor": "factor"}

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, hidden_size: int | None = None, factor: int = 2
    ):
        super().__init__()
        self.factor = factor
        hidden_size = hidden_size or out_features
        self.linear_1 = nn.Linear(in_features * factor * factor, hidden_size, bias=bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, out_features, bias=bias)

    @classmethod
    def tokens_per_image(cls, settings: dict, height: int, width: int, prefix_tokens: int = 0) -> int:
        factor = settings.get("factor", 2)
        cls.check_grid(factor, height, width)
        return (height // factor) * (width // factor)

    @staticmethod
    def check_grid(factor: int, height: int, width: int) -> None:
        if height % factor or width % factor:
            raise ValueError(
                f"pixel_shuffle_factor={factor} does not divide the patch grid {height}x{width}. Pick a factor that "
                f"divides both sides, or resize images to a multiple of {factor} patches per side."
            )

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        if grid_size is None:
            raise ValueError("PixelShuffleBridge needs grid_size=(h, w) of the patch grid.")
        (h, w), s = grid_size, self.factor
        batch, num_patches, dim = image_features.shape
        if num_patches != h * w:
            raise ValueError(
                f"PixelShuffleBridge got {num_patches} tokens for a {h}x{w} patch grid. The vision tower emits extra "
                "(CLS/register) tokens: use vision_feature_select_strategy='default' to drop them."
            )
        self.check_grid(s, h, w)
        x = image_features.view(batch, h // s, s, w // s, s, dim)  # (B, h/s, s, w/s, s, D)
        x = x.permute(0, 1, 3, 2, 4, 5).reshape(batch, (h // s) * (w // s), s * s * dim)  # (B, N/s^2, s^2 D)
        hidden_states = self.linear_1(x.to(self.linear_1.weight.dtype))
        return self.linear_2(self.act(hidden_states))  # (B, N/s^2, D_text)


class PerceiverAttention(nn.Module):
    """Flamingo's perceiver attention: the latents query [media; latents] (the latents read themselves too)."""

    def __init__(self, dim: int, heads: int, head_dim: int):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, heads * head_dim, bias=False)
        self.to_kv = nn.Linear(dim, 2 * heads * head_dim, bias=False)
        self.to_out = nn.Linear(heads * head_dim, dim, bias=False)

    def forward(self, media: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """(B, N, D) media, (B, n, D) latents -> (B, n, D) update."""
        media, latents = self.norm_media(media), self.norm_latents(latents)
        split = lambda x: x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # noqa: E731  (B, h, _, d)
        q = split(self.to_q(latents))
        k, v = map(split, self.to_kv(torch.cat([media, latents], dim=1)).chunk(2, dim=-1))
        out = nn.functional.scaled_dot_product_attention(q, k, v)  # (B, h, n, d)
        return self.to_out(out.transpose(1, 2).flatten(2))


class PerceiverResampler(Bridge):
    """Flamingo's Perceiver Resampler (also BLIP-3 / xGen-MM's prefix bridge): `num_latents` learned latents read a
    variable number of vision tokens through `depth` blocks of [perceiver attention, feed-forward], each residual.

    Input `(B, N, D_in)` for images, or `(B, F, N, D_in)` for F video frames, which first get a learned per-frame
    time embedding and are then read as one set of F * N tokens. Output `(B, num_latents, D_out)`: the latents stay at
    the vision width, and a final linear map takes them to `out_features` (None: no map, as in Flamingo, whose
    cross-attention reads the vision width).
    """

    config_fields = {"perceiver_num_latents": "num_latents", "perceiver_depth": "depth",
                     "perceiver_heads": "heads", "perceiver_head_dim": "head_dim"}  # fmt: skip

    def __init__(
        self,
        in_features: int,
        out_features: int | None = None,
        num_latents: int = 64,
        depth: int = 6,
        heads: int = 8,
        head_dim: int = 64,
        max_frames: int = 8,
        ff_mult: int = 4,
    ):
        super().__init__()
        self.latents = nn.Parameter(torch.zeros(num_latents, in_features))
        self.frame_embeddings = nn.Parameter(torch.zeros(max_frames, in_features))
        self.layers = nn.ModuleList()
        for _ in range(depth):
            feed_forward = nn.Sequential(
                nn.LayerNorm(in_features),
                nn.Linear(in_features, ff_mult * in_features, bias=False),
                nn.GELU(),
                nn.Linear(ff_mult * in_features, in_features, bias=False),
            )
            self.layers.append(nn.ModuleList([PerceiverAttention(in_features, heads, head_dim), feed_forward]))
        self.norm = nn.LayerNorm(in_features)
        self.projection = nn.Linear(in_features, out_features) if out_features is not None else nn.Identity()

    @classmethod
    def tokens_per_image(cls, settings: dict, height: int, width: int, prefix_tokens: int = 0) -> int:
        return settings.get("num_latents", 64)  # a fixed count, whatever the image

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        init.normal_(self.latents)  # N(0, 1), as Flamingo's latents and time embeddings
        init.normal_(self.frame_embeddings)

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = image_features.to(self.latents.dtype)
        if x.dim() == 4:  # (B, F, N, D): add each frame's time embedding, then read all frames as one set
            frames = x.shape[1]
            if frames > self.frame_embeddings.shape[0]:
                raise ValueError(f"{frames} frames > the resampler's max_frames={self.frame_embeddings.shape[0]}.")
            x = (x + self.frame_embeddings[:frames, None]).flatten(1, 2)  # (B, F * N, D)
        latents = self.latents.expand(x.shape[0], -1, -1)  # (B, n, D)
        for attention, feed_forward in self.layers:
            latents = latents + attention(x, latents)
            latents = latents + feed_forward(latents)
        return self.projection(self.norm(latents))  # (B, n, D_out)


def sincos_2d(dim: int, height: int, width: int) -> torch.Tensor:
    """(height * width, dim) fixed 2D sin-cos position encodings (MAE / Qwen-VL): the first half of the channels
    encodes the row, the second the column, each as [sin | cos] over geometrically spaced frequencies."""
    if dim % 4:
        raise ValueError(f"2D sin-cos position encodings need a width divisible by 4, got {dim}.")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim // 4))  # (dim/4,)

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (n,) -> (n, dim/2)
        angles = positions.double()[:, None] * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    rows, cols = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    return torch.cat([encode(rows.flatten()), encode(cols.flatten())], dim=1).float()  # (h * w, dim)


class QwenAdapterBridge(Bridge):
    """Qwen-VL's adapter: `num_queries` learned queries read the patch features through one cross-attention layer,
    with 2D sin-cos absolute positions added to the queries (a sqrt(n) x sqrt(n) grid) and to the keys (the patch
    grid), then LayerNorm and a linear map. A fixed number of tokens per image, whatever its size (Qwen-VL: 256).

    Attention runs at the LM width (`out_features`), as in Qwen-VL, where the features are first projected
    (`kv_proj`). Tokens the tower keeps before its patches (CLS, registers) get no position.
    """

    config_fields = {"adapter_num_queries": "num_queries", "adapter_heads": "heads"}

    def __init__(self, in_features: int, out_features: int, num_queries: int = 256, heads: int = 8):
        super().__init__()
        side = int(round(num_queries**0.5))
        if side * side != num_queries:
            raise ValueError(f"adapter_num_queries={num_queries} must be a square (Qwen-VL: 256 = 16 x 16).")
        if out_features % heads:
            raise ValueError(f"adapter_heads={heads} must divide the LM width {out_features}.")
        self.side = side
        self.query = nn.Parameter(torch.zeros(num_queries, out_features))
        self.kv_proj = nn.Linear(in_features, out_features, bias=False)
        self.ln_q, self.ln_kv = nn.LayerNorm(out_features), nn.LayerNorm(out_features)
        self.attn = nn.MultiheadAttention(out_features, heads, batch_first=True)
        self.ln_post = nn.LayerNorm(out_features)
        self.proj = nn.Linear(out_features, out_features)
        # The positions are recomputed in forward rather than kept as a buffer: transformers re-initialises a module
        # with a buffer missing from the checkpoint, which would reset the loaded queries.

    @classmethod
    def tokens_per_image(cls, settings: dict, height: int, width: int, prefix_tokens: int = 0) -> int:
        return settings.get("num_queries", 256)  # a fixed count, whatever the image

    @torch.no_grad()
    def init_weights(self, std: float) -> None:
        super().init_weights(std)
        init.normal_(self.query, std=0.02)  # Qwen-VL: trunc_normal(0.02)

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        x = self.ln_kv(self.kv_proj(image_features.to(self.kv_proj.weight.dtype)))  # (B, N, D)
        height, width = grid_size if grid_size is not None else (self.side, self.side)
        key_pos = sincos_2d(x.shape[-1], height, width).to(x)  # (h * w, D)
        prefix = x.shape[1] - key_pos.shape[0]
        if prefix < 0:
            raise ValueError(f"{x.shape[1]} vision tokens for a {height}x{width} patch grid.")
        key_pos = torch.cat([key_pos.new_zeros(prefix, key_pos.shape[1]), key_pos])  # (N, D)
        query_pos = sincos_2d(x.shape[-1], self.side, self.side).to(x)  # (n, D)
        queries = (self.ln_q(self.query) + query_pos).expand(x.shape[0], -1, -1)  # (B, n, D)
        out, _ = self.attn(queries, x + key_pos, x, need_weights=False)  # (B, n, D)
        return self.proj(self.ln_post(out))  # (B, n, D_text)


BRIDGES: dict[str, type[Bridge]] = {
    "linear": LinearBridge,
    "mlp2x_gelu": Mlp2xGeluBridge,
    "pixel_shuffle": PixelShuffleBridge,
    "perceiver": PerceiverResampler,
    "qwen_adapter": QwenAdapterBridge,
}


def register_bridge(name: str, cls: type[Bridge]) -> type[Bridge]:
    """Make `cls` available as `bridge_type=name` (configs, composition, processors, the training CLI). A model
    saved with it loads wherever the registering module has been imported."""
    if not (isinstance(cls, type) and issubclass(cls, Bridge)):
        raise TypeError(
            f"register_bridge({name!r}, ...) needs a subclass of hf_mm.modeling.bridges.Bridge, got {cls!r}."
        )
    if name in BRIDGES and BRIDGES[name] is not cls:
        raise ValueError(f"bridge_type={name!r} is already registered to {BRIDGES[name].__name__}.")
    BRIDGES[name] = cls
    return cls


def get_bridge(bridge_type: str) -> type[Bridge]:
    if bridge_type not in BRIDGES:
        raise ValueError(
            f"Unknown bridge_type={bridge_type!r}. Allowed: {sorted(BRIDGES)} (hf_mm.register_bridge adds one)."
        )
    return BRIDGES[bridge_type]


def build_bridge(config, in_features: int, out_features: int) -> Bridge:
    """The bridge `config.bridge_type` names, built from its own settings in `config`."""
    return get_bridge(config.bridge_type).from_config(config, in_features, out_features)


__all__ = ["BRIDGES", "Bridge", "build_bridge", "get_bridge", "register_bridge", "sincos_2d"]
