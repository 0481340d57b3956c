"""Prefix bridges: vision features in, LM-width tokens out.

Every bridge maps `(B, N, D_vision)` patch features on a `(h, w)` grid to `(B, N_out, D_text)` tokens that the
model scatters into the `<image>` placeholders of the LM input. One class per mechanism, chosen by name through
`BRIDGES`; a bridge's settings are plain config fields, never flags threaded through constructors.

Contract for every bridge:
- `forward(image_features, grid_size)` takes `(B, N, D_in)` and the patch grid `(h, w)`, with `N == h * w` for
  bridges that use the grid, and returns `(B, num_output_tokens(h, w), D_out)`.
- The input is cast to the bridge's own weight dtype first: TRL's QLoRA path casts trainable parameters to bf16
  while the frozen tower may still emit fp32.
- `num_output_tokens(h, w)` is what the processor uses to expand `<image>`.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn


class LinearBridge(nn.Module):
    """LLaVA-1: one linear map from the vision width to the LM width."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=bias)

    @staticmethod
    def num_output_tokens(height: int, width: int) -> int:
        return height * width

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        return self.linear(image_features.to(self.linear.weight.dtype))  # (B, N, D_text)


class Mlp2xGeluBridge(nn.Module):
    """LLaVA-1.5: Linear -> GELU (exact) -> Linear, the `mlp2x_gelu` projector.

    Parameter names `linear_1` / `linear_2` match transformers' `LlavaMultiModalProjector`, so converted
    checkpoints map one to one.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, hidden_size: int | None = None):
        super().__init__()
        hidden_size = hidden_size or out_features
        self.linear_1 = nn.Linear(in_features, hidden_size, bias=bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, out_features, bias=bias)

    @staticmethod
    def num_output_tokens(height: int, width: int) -> int:
        return height * width

    def forward(self, image_features: torch.Tensor, grid_size: tuple[int, int] | None = None) -> torch.Tensor:
        hidden_states = self.linear_1(image_features.to(self.linear_1.weight.dtype))
        return self.linear_2(self.act(hidden_states))  # (B, N, D_text)


class PixelShuffleBridge(nn.Module):
    """Concatenate each s x s neighbourhood of patches, then an MLP (MiniGPT-v2, Idefics3, Kimi-VL, nanoVLM).

    The grid must divide by `factor` on both sides; the output has `N / s^2` tokens, each of width `s^2 * D_in`
    before the MLP. Neighbourhoods are read row-major within the block, so the concatenation order is
    (row 0: col 0, col 1, ..., row 1: ...), matching MiniGPT-v2's "4 adjacent tokens" for s = 2.
    """

    def __init__(
        self, in_features: int, out_features: int, bias: bool = True, hidden_size: int | None = None, factor: int = 2
    ):
        super().__init__()
        self.factor = factor
        hidden_size = hidden_size or out_features
        self.linear_1 = nn.Linear(in_features * factor * factor, hidden_size, bias=bias)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(hidden_size, out_features, bias=bias)

    def num_output_tokens(self, height: int, width: int) -> int:
        self._check_grid(height, width)
        return (height // self.factor) * (width // self.factor)

    def _check_grid(self, height: int, width: int) -> None:
        if height % self.factor or width % self.factor:
            raise ValueError(
                f"pixel_shuffle_factor={self.factor} does not divide the patch grid {height}x{width}. "
                "Pick a factor that divides both sides, or change the image size."
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
        self._check_grid(h, w)
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


class PerceiverResampler(nn.Module):
    """Flamingo's Perceiver Resampler (also BLIP-3 / xGen-MM's prefix bridge): `num_latents` learned latents read a
    variable number of vision tokens through `depth` blocks of [perceiver attention, feed-forward], each residual.

    Input `(B, N, D_in)` for images, or `(B, F, N, D_in)` for F video frames, which first get a learned per-frame
    time embedding and are then read as one set of F * N tokens. Output `(B, num_latents, D_out)`: the latents stay at
    the vision width, and a final linear map takes them to `out_features` (None: no map, as in Flamingo, whose
    cross-attention reads the vision width).
    """

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

    def num_output_tokens(self, height: int = 0, width: int = 0) -> int:
        return self.latents.shape[0]

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


class QwenAdapterBridge(nn.Module):
    """Qwen-VL's adapter: `num_queries` learned queries read the patch features through one cross-attention layer,
    with 2D sin-cos absolute positions added to the queries (a sqrt(n) x sqrt(n) grid) and to the keys (the patch
    grid), then LayerNorm and a linear map. A fixed number of tokens per image, whatever its size (Qwen-VL: 256).

    Attention runs at the LM width (`out_features`), as in Qwen-VL, where the features are first projected
    (`kv_proj`). Tokens the tower keeps before its patches (CLS, registers) get no position.
    """

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

    def num_output_tokens(self, height: int = 0, width: int = 0) -> int:
        return self.query.shape[0]

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


BRIDGES: dict[str, type[nn.Module]] = {
    "linear": LinearBridge,
    "mlp2x_gelu": Mlp2xGeluBridge,
    "pixel_shuffle": PixelShuffleBridge,
    "perceiver": PerceiverResampler,
    "qwen_adapter": QwenAdapterBridge,
}


def build_bridge(bridge_type: str, in_features: int, out_features: int, **settings) -> nn.Module:
    """Instantiate the bridge registered under `bridge_type`.

    `settings` holds every bridge setting of the family config; each bridge receives only the ones its constructor
    names, so a config can carry `pixel_shuffle_factor` without the linear bridge having to accept it.
    """
    if bridge_type not in BRIDGES:
        raise ValueError(f"Unknown bridge_type={bridge_type!r}. Allowed: {sorted(BRIDGES)}.")
    cls = BRIDGES[bridge_type]
    accepted = inspect.signature(cls.__init__).parameters
    return cls(in_features, out_features, **{k: v for k, v in settings.items() if k in accepted})
