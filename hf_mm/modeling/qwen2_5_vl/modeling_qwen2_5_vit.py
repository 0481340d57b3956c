"""Qwen2.5-VL's native-resolution ViT (the `hf_mm_qwen2_5_vit` tower) and its 2x2 patch merger (the bridge).

Images of any size arrive as one packed sequence of flattened patches, (N, C * 2 * 14 * 14), laid out block-major:
every 2x2 block of neighbouring patches is 4 consecutive rows, so the merger can concatenate them. `grid_thw`
(n_images, 3) gives each image's (frames, patch rows, patch columns).

    patches -> Conv3d patch embed -> [block: RMSNorm -> attention with 2D RoPE -> RMSNorm -> SwiGLU] x depth
            -> (bridge) RMSNorm -> concat 2x2 -> Linear -> GELU -> Linear

Attention is windowed (window_size px, 4x4 merge units by default) except in `fullatt_block_indexes`, where each
frame attends to itself. No padding: the sequence is cut into segments (windows or frames), segments of equal
length are stacked and run through SDPA together, so the cost is linear in the number of windows, never quadratic in
the packed length. Departures from the reference, written down:
- Our tower returns hidden states in the input (block-major) order; the reference keeps them window-permuted and
  un-permutes after merging. Merging permutes whole 2x2 blocks, so both give the same merged features.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutput

from ..initialization import GuardedInitMixin
from ..safetensors_only import SafetensorsOnlyMixin
from .configuration_qwen2_5_vit import HfMmQwen2_5_ViTConfig


class RMSNorm(nn.Module):
    """RMSNorm computed in fp32 (parity breaks otherwise)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def vision_position_ids(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(N, 2) (row, col) of every patch, in block-major order, repeated over frames."""
    ids = []
    for t, h, w in grid_thw.tolist():
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        blocks = (h // merge, merge, w // merge, merge)
        rows, cols = (x.reshape(blocks).transpose(1, 2).flatten() for x in (rows, cols))
        ids.append(torch.stack([rows, cols], dim=-1).repeat(t, 1))
    return torch.cat(ids).to(grid_thw.device)


def window_order(grid_thw: torch.Tensor, merge: int, window: int) -> tuple[torch.Tensor, list[int], list[int]]:
    """Window-major order of the merge units, and the segment lengths (in patches) for windowed and full blocks.

    Returns (order over merge units, window lengths, frame lengths); each frame's windows stay contiguous, so the
    frame segments also hold in window order.
    """
    order, windows, frames, offset = [], [], [], 0
    unit = merge * merge
    for t, h, w in grid_thw.tolist():
        gh, gw = h // merge, w // merge
        for frame in range(t):
            index = torch.arange(gh * gw).view(gh, gw) + offset + frame * gh * gw
            for r in range(0, gh, window):
                for c in range(0, gw, window):
                    cell = index[r : r + window, c : c + window].flatten()
                    order.append(cell)
                    windows.append(cell.numel() * unit)
            frames.append(gh * gw * unit)
        offset += t * gh * gw
    return torch.cat(order).to(grid_thw.device), windows, frames


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def segment_attention(q, k, v, lengths: list[int]) -> torch.Tensor:
    """Attention within each segment of the packed (N, heads, d) sequence; equal-length segments share one SDPA."""
    out = torch.empty_like(q)
    starts = torch.tensor([0, *lengths[:-1]], device=q.device).cumsum(0)
    sizes = torch.tensor(lengths, device=q.device)
    for length in sorted(set(lengths)):
        rows = starts[sizes == length][:, None] + torch.arange(length, device=q.device)  # (n_seg, L)
        qs, ks, vs = (x[rows].transpose(1, 2) for x in (q, k, v))  # (n_seg, heads, L, d)
        out[rows.flatten()] = F.scaled_dot_product_attention(qs, ks, vs).transpose(1, 2).flatten(0, 1)
    return out


def segment_attention_weights(q, k, lengths: list[int]) -> torch.Tensor:
    """(heads, N, N) eager attention probabilities of the packed sequence, block-diagonal over the segments: only
    computed when attentions are asked for (`output_attentions`), as transformers' eager path."""
    segment = torch.repeat_interleave(
        torch.arange(len(lengths), device=q.device), torch.tensor(lengths, device=q.device)
    )
    scores = torch.einsum("nhd,mhd->hnm", q, k) * q.shape[-1] ** -0.5  # (heads, N, N)
    scores = scores.masked_fill(segment[:, None] != segment[None, :], torch.finfo(scores.dtype).min)
    return scores.softmax(-1)


class VisionAttention(nn.Module):
    def __init__(self, config: HfMmQwen2_5_ViTConfig):
        super().__init__()
        self.num_heads = config.num_heads
        self.qkv = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=True)
        self.proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x, cos, sin, lengths: list[int], output_attentions: bool = False):
        """(N, D) -> ((N, D), (heads, N, N) probabilities when `output_attentions`, else None)."""
        q, k, v = self.qkv(x).view(x.shape[0], 3, self.num_heads, -1).unbind(1)  # each (N, heads, d)
        cos, sin = cos[:, None].float(), sin[:, None].float()
        q = (q.float() * cos + rotate_half(q.float()) * sin).to(v.dtype)  # 2D RoPE in fp32
        k = (k.float() * cos + rotate_half(k.float()) * sin).to(v.dtype)
        if not output_attentions:
            return self.proj(segment_attention(q, k, v, lengths).flatten(1)), None
        weights = segment_attention_weights(q, k, lengths)
        return self.proj(torch.einsum("hnm,mhd->nhd", weights, v).flatten(1)), weights


class VisionMLP(nn.Module):
    def __init__(self, config: HfMmQwen2_5_ViTConfig):
        super().__init__()
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=True)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=True)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class VisionBlock(GradientCheckpointingLayer):  # recomputed in backward under activation checkpointing
    def __init__(self, config: HfMmQwen2_5_ViTConfig):
        super().__init__()
        self.norm1 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.attn = VisionAttention(config)
        self.norm2 = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = VisionMLP(config)

    def forward(self, x, cos, sin, lengths: list[int], output_attentions: bool = False):
        attended, weights = self.attn(self.norm1(x), cos, sin, lengths, output_attentions)
        x = x + attended
        return x + self.mlp(self.norm2(x)), weights


class PatchMerger(nn.Module):
    """The bridge: RMSNorm -> concatenate each 2x2 block -> Linear -> GELU -> Linear. (N, D) -> (N / 4, D_out)."""

    def __init__(self, hidden_size: int, out_hidden_size: int, merge: int = 2, eps: float = 1e-6):
        super().__init__()
        self.merged = hidden_size * merge * merge
        self.ln_q = RMSNorm(hidden_size, eps)
        self.mlp = nn.Sequential(
            nn.Linear(self.merged, self.merged), nn.GELU(), nn.Linear(self.merged, out_hidden_size)
        )

    def forward(self, features: torch.Tensor, grid_thw: torch.Tensor | None = None) -> torch.Tensor:
        features = features.to(self.mlp[0].weight.dtype)  # QLoRA casts trainable weights to bf16
        return self.mlp(self.ln_q(features).view(-1, self.merged))


@dataclass
class HfMmQwen2_5_ViTOutput(BaseModelOutput):
    """`last_hidden_state` (N_patches, D) in the input's block-major order; `hidden_states` if asked: the patch
    embeddings and each block's output (depth + 1 entries, transformers' convention)."""


class HfMmQwen2_5_ViTModel(GuardedInitMixin, SafetensorsOnlyMixin, PreTrainedModel):
    config: HfMmQwen2_5_ViTConfig
    base_model_prefix = "vision_tower"
    main_input_name = "pixel_values"
    input_modalities = ("image", "video")
    _no_split_modules = ["VisionBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True

    def __init__(self, config: HfMmQwen2_5_ViTConfig):
        super().__init__(config)
        kernel = (config.temporal_patch_size, config.patch_size, config.patch_size)
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv3d(config.in_channels, config.hidden_size, kernel, stride=kernel, bias=False)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.depth))
        spatial = config.head_dim // 2  # half the head rotates by rows, half by columns
        inv_freq = 1.0 / config.rope_theta ** (torch.arange(0, spatial, 2, dtype=torch.float) / spatial)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module):
        """The one place weights are initialised: linear and conv weights N(0, initializer_range), zero biases,
        unit RMSNorm scales, and the RoPE frequencies (a non-persistent buffer, rebuilt after meta-device loads)."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv3d)):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, RMSNorm):
            init.constant_(module.weight, 1.0)
        elif isinstance(module, HfMmQwen2_5_ViTModel):
            spatial = self.config.head_dim // 2
            init.copy_(
                module.inv_freq, 1.0 / self.config.rope_theta ** (torch.arange(0, spatial, 2).float() / spatial)
            )

    def rotary(self, grid_thw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, head_dim) cos and sin: [rows | cols] frequencies, repeated for the two halves rotate_half pairs."""
        ids = vision_position_ids(grid_thw, self.config.spatial_merge_size).float()  # (N, 2)
        angles = (ids[..., None] * self.inv_freq.float()).flatten(1)  # (N, 2 * head_dim / 4): [rows | cols]
        angles = torch.cat([angles, angles], dim=-1)
        return angles.cos(), angles.sin()

    def forward(
        self, pixel_values, grid_thw, output_hidden_states: bool | None = None, output_attentions: bool | None = None
    ) -> HfMmQwen2_5_ViTOutput:
        """(N_patches, C*2*14*14) packed pixels and (N_images, 3) grids -> (N_patches, D), in the input's order."""
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        c, t, p = config.in_channels, config.temporal_patch_size, config.patch_size
        patches = pixel_values.view(-1, c, t, p, p).to(self.patch_embed.proj.weight.dtype)
        x = self.patch_embed.proj(patches).view(-1, config.hidden_size)  # (N, D)

        unit = config.spatial_merge_size**2
        units, windows, frames = window_order(grid_thw, config.spatial_merge_size, config.window_units)
        order = (units[:, None] * unit + torch.arange(unit, device=x.device)).flatten()  # patch order, window-major
        restore = torch.argsort(order)  # window-major -> the input's block-major order
        cos, sin = (r[order] for r in self.rotary(grid_thw))
        x = x[order]
        states, attentions = [x[restore]], []
        for index, block in enumerate(self.blocks):
            lengths = frames if index in config.fullatt_block_indexes else windows
            x, weights = block(x, cos, sin, lengths, output_attentions)
            if output_hidden_states:
                states.append(x[restore])
            if output_attentions:
                attentions.append(weights[:, restore][:, :, restore][None])  # (1, heads, N, N)
        return HfMmQwen2_5_ViTOutput(
            last_hidden_state=x[restore],
            hidden_states=tuple(states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


__all__ = ["HfMmQwen2_5_ViTModel", "HfMmQwen2_5_ViTOutput", "PatchMerger", "vision_position_ids", "window_order"]
