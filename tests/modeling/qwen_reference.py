"""Tiny Qwen2.5-VL reference settings and inputs (one image, two images, a padded batch, a video), shared by the
parity, remote-code and hub tests."""

import torch

IMAGE, VIDEO, START, END = 100, 101, 102, 103


VISION = dict(
    depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=32, fullatt_block_indexes=[1]
)


TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
            vocab_size=128, rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]})  # fmt: skip


def run(grid, token):
    return [START] + [token] * (int(torch.tensor(grid).prod()) // 4) + [END]


def inputs(kind: str) -> dict:
    generator = torch.Generator().manual_seed(1)
    if kind == "one_image":
        grids, rows = [[1, 4, 6]], [[5, 6, *run([1, 4, 6], IMAGE), 7, 8]]
    elif kind == "two_images":
        grids, rows = [[1, 4, 6], [1, 8, 4]], [[5, *run([1, 4, 6], IMAGE), 9, *run([1, 8, 4], IMAGE), 7]]
    elif kind == "padded_batch":
        long, short = [5, 6, *run([1, 4, 6], IMAGE), 7, 8, 9], [5, *run([1, 2, 2], IMAGE), 7]
        grids, rows = [[1, 4, 6], [1, 2, 2]], [long, [0] * (len(long) - len(short)) + short]
    elif kind == "padded_two_images":  # two images of different sizes in one sample, a left-padded second one
        long = [5, *run([1, 4, 6], IMAGE), 9, *run([1, 8, 4], IMAGE), 7]
        short = [5, *run([1, 2, 2], IMAGE), 7]
        grids, rows = [[1, 4, 6], [1, 8, 4], [1, 2, 2]], [long, [0] * (len(long) - len(short)) + short]
    else:  # a 4-frame video (2 temporal patches)
        grid = [2, 4, 4]
        ids = torch.tensor([[5, *run(grid, VIDEO), 7, 8]])
        return {
            "input_ids": ids, "attention_mask": torch.ones_like(ids), "mm_token_type_ids": (ids == VIDEO).long() * 2,
            "pixel_values_videos": torch.randn(32, 1176, generator=generator), "video_grid_thw": torch.tensor([grid]),
            "second_per_grid_ts": torch.tensor([1.0]),
        }  # fmt: skip
    ids = torch.tensor(rows)
    mask = torch.ones_like(ids)
    if kind.startswith("padded"):
        mask[1, : (ids[1] == 0).sum()] = 0
    n = sum(int(torch.tensor(g).prod()) for g in grids)
    return {
        "input_ids": ids, "attention_mask": mask, "mm_token_type_ids": (ids == IMAGE).long(),
        "pixel_values": torch.randn(n, 1176, generator=generator), "image_grid_thw": torch.tensor(grids),
    }  # fmt: skip
