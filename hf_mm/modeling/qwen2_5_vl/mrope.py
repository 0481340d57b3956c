"""Multimodal RoPE position ids (Qwen2-VL / Qwen2.5-VL): three axes (temporal, height, width) per token.

- Text tokens count up by one, equal on all three axes.
- A vision run starting at position s gets (s + floor(t * interval), s + row, s + col) over its merged grid; the
  interval is 1 for images and `tokens_per_second * second_per_grid_t` for video, so temporal ids measure absolute
  time (4 ids per second by default, whatever the sampling rate).
- The text after a vision run resumes at s + max(rows, cols), as the reference does (for a long video the temporal
  ids can pass that point; we keep the reference's choice for checkpoint compatibility).
- Padding (attention_mask 0) gets position 0 and is skipped when counting.

`rope_deltas` (max position + 1 - length) let decoding continue from the prompt: the next token's ids are
length + delta on every axis.
"""

import torch
from torch import nn

TEXT, IMAGE, VIDEO = 0, 1, 2


def _runs(types: list[int]) -> list[tuple[int, int, int]]:
    """[(modality, start, end), ...] for consecutive equal token types."""
    runs, start = [], 0
    for i in range(1, len(types) + 1):
        if i == len(types) or types[i] != types[start]:
            runs.append((types[start], start, i))
            start = i
    return runs


def _vision_ids(start: int, grid: list[int], merge: int, interval: float) -> torch.Tensor:
    t, h, w = grid[0], grid[1] // merge, grid[2] // merge
    temporal = (torch.arange(t) * interval).long() + start  # (t,)
    ids = torch.stack(
        torch.meshgrid(temporal, torch.arange(h) + start, torch.arange(w) + start, indexing="ij")
    )  # (3, t, h, w)
    return ids.reshape(3, -1)


def mrope_position_ids(
    mm_token_type_ids: torch.Tensor,
    image_grid_thw: torch.Tensor | None = None,
    video_grid_thw: torch.Tensor | None = None,
    second_per_grid_ts: torch.Tensor | None = None,
    attention_mask: torch.Tensor | None = None,
    spatial_merge_size: int = 2,
    tokens_per_second: float = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(3, B, L) position ids and (B, 1) rope deltas from token types (0 text, 1 image, 2 video) and the grids."""
    batch, length = mm_token_type_ids.shape
    grids = {
        IMAGE: iter(image_grid_thw.tolist() if image_grid_thw is not None else []),
        VIDEO: iter(video_grid_thw.tolist() if video_grid_thw is not None else []),
    }
    seconds = iter(second_per_grid_ts.tolist() if second_per_grid_ts is not None else [])
    position_ids = torch.zeros(3, batch, length, dtype=torch.long)
    deltas = []
    for b in range(batch):
        keep = attention_mask[b].bool() if attention_mask is not None else torch.ones(length, dtype=torch.bool)
        pieces, position = [], 0
        for modality, start, end in _runs(mm_token_type_ids[b][keep].tolist()):
            if modality == TEXT:
                pieces.append(torch.arange(position, position + end - start).expand(3, -1))
                position += end - start
                continue
            grid = next(grids[modality], None)
            if grid is None:
                raise ValueError(f"Sample {b} has more {'image' if modality == IMAGE else 'video'} runs than grids.")
            expected = grid[0] * grid[1] * grid[2] // spatial_merge_size**2
            if end - start != expected:
                raise ValueError(
                    f"Sample {b}: a run of {end - start} vision tokens, but its grid {grid} needs {expected}. Wrap each "
                    "image or video in <|vision_start|> ... <|vision_end|> so adjacent ones stay apart."
                )
            interval = tokens_per_second * next(seconds, 1.0) if modality == VIDEO else 1
            pieces.append(_vision_ids(position, grid, spatial_merge_size, interval))
            position += max(grid[1], grid[2]) // spatial_merge_size
        ids = torch.cat(pieces, dim=1) if pieces else torch.zeros(3, 0, dtype=torch.long)
        position_ids[:, b, keep] = ids
        deltas.append((ids.max() + 1 - ids.shape[1]) if ids.numel() else torch.tensor(0))
    return position_ids.to(mm_token_type_ids.device), torch.stack(deltas).view(batch, 1).to(mm_token_type_ids.device)


def packed_mrope_position_ids(
    mm_token_type_ids: torch.Tensor, image_grid_thw, video_grid_thw, second_per_grid_ts, position_ids: torch.Tensor,
    spatial_merge_size: int = 2, tokens_per_second: float = 4,
) -> torch.Tensor:  # fmt: skip
    """(3, B, L) ids for packed rows, where 1D `position_ids` restart at 0 for every sample: each sample gets the
    ids it would get alone, from its own grids (taken in order, as the samples' vision runs appear row by row)."""
    batch, length = position_ids.shape
    segments = []  # (row, start, end) of every sample
    for b in range(batch):
        starts = (position_ids[b] == 0).nonzero().flatten().tolist()
        if not starts or starts[0] != 0:
            raise ValueError(f"Packed row {b} must start a sample at position 0; its position_ids start at "
                             f"{int(position_ids[b, 0])}.")  # fmt: skip
        segments += [(b, s, e) for s, e in zip(starts, [*starts[1:], length])]
    width = max(end - start for _, start, end in segments)
    types = torch.zeros(len(segments), width, dtype=mm_token_type_ids.dtype)
    mask = torch.zeros(len(segments), width, dtype=torch.long)
    for i, (b, start, end) in enumerate(segments):
        types[i, : end - start], mask[i, : end - start] = mm_token_type_ids[b, start:end].cpu(), 1
    ids, _ = mrope_position_ids(
        types, image_grid_thw, video_grid_thw, second_per_grid_ts, mask, spatial_merge_size, tokens_per_second
    )
    packed = torch.zeros(3, batch, length, dtype=torch.long)
    for i, (b, start, end) in enumerate(segments):
        packed[:, b, start:end] = ids[:, i, : end - start].cpu()
    return packed.to(position_ids.device)


class MultimodalRotaryEmbedding(nn.Module):
    """Wraps any LM's rotary embedding so that it rotates by M-RoPE, without touching the LM's code.

    The inner rotary embedding computes cos/sin for each of the three axes; frequency band i of `mrope_section`
    (which sums to head_dim / 2) then takes its values from axis i % 3, as Qwen2-VL does. The 3D ids cannot travel
    through an arbitrary LM's forward, so the caller sets `self.position_ids` (3, B, L) before calling the LM;
    without them (text-only decoding steps) the LM's own 2D ids are used on all three axes, which is exactly M-RoPE
    for text.
    """

    def __init__(self, rotary: nn.Module, mrope_section: list[int]):
        super().__init__()
        self.rotary, self.mrope_section = rotary, list(mrope_section)
        self.position_ids: torch.Tensor | None = None

    def _combine(self, parts: list[torch.Tensor]) -> torch.Tensor:
        half = parts[0].shape[-1] // 2  # the LM's layout is [freqs | freqs] (rotate_half)
        chunks = [part[..., :half].split(self.mrope_section, dim=-1) for part in parts]
        mixed = torch.cat([chunks[i % 3][i] for i in range(len(self.mrope_section))], dim=-1)
        return torch.cat((mixed, mixed), dim=-1)

    def forward(self, x: torch.Tensor, position_ids: torch.Tensor):
        ids = self.position_ids
        if ids is None or ids.shape[-1] != position_ids.shape[-1]:  # LMs pass (1, L) or (B, L) ids
            ids = position_ids.expand(3, *position_ids.shape)
        cos, sin = zip(*(self.rotary(x, ids[axis]) for axis in range(3)))  # each (B, L, head_dim)
        return self._combine(list(cos)), self._combine(list(sin))


def wrap_rotary(language_model: nn.Module, mrope_section: list[int]) -> MultimodalRotaryEmbedding:
    """Replace `language_model.rotary_emb` by its M-RoPE wrapper; refuse LMs without a compatible rotary embedding."""
    rotary = getattr(language_model, "rotary_emb", None)
    if rotary is None:
        raise ValueError(
            f"{type(language_model).__name__} has no `rotary_emb`: M-RoPE needs an LM with rotary position "
            "embeddings (Qwen2, Llama, Mistral, ...)."
        )
    inv_freq = getattr(rotary, "inv_freq", None)
    if inv_freq is None:
        raise ValueError(f"{type(rotary).__name__} has no `inv_freq`: hf_mm cannot tell how its bands are laid out.")
    half = inv_freq.numel()  # known from the shape alone, so this also works on the meta device
    if sum(mrope_section) != half:
        raise ValueError(f"mrope_section={mrope_section} must sum to head_dim / 2 = {half} for this LM.")
    if not inv_freq.is_meta:
        cos, _ = rotary(torch.zeros(1, 1, 1), torch.tensor([[3]]))
        if not torch.allclose(cos[..., :half], cos[..., half:]):
            raise ValueError(
                f"{type(rotary).__name__} does not lay out its frequencies as [freqs | freqs] (rotate_half), so "
                "its bands cannot be assigned to M-RoPE's axes."
            )
    language_model.rotary_emb = MultimodalRotaryEmbedding(rotary, mrope_section)
    return language_model.rotary_emb


__all__ = [
    "mrope_position_ids",
    "packed_mrope_position_ids",
    "MultimodalRotaryEmbedding",
    "wrap_rotary",
    "TEXT",
    "IMAGE",
    "VIDEO",
]
