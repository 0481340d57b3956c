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


BRIDGES: dict[str, type[nn.Module]] = {
    "linear": LinearBridge,
    "mlp2x_gelu": Mlp2xGeluBridge,
    "pixel_shuffle": PixelShuffleBridge,
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
