"""Negatives from every process: on 2 gloo processes, the contrastive losses and the DDP-averaged gradients equal
the single-process loss and gradients on the concatenated batch."""

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from hf_mm.modeling.clip import infonce_loss, sigmoid_loss

WORLD, PER_RANK, DIM = 2, 3, 8


def setup():
    """Shared weights and the global batch (6 pairs), identical in every process."""
    generator = torch.Generator().manual_seed(0)
    images, texts = (
        torch.randn(WORLD * PER_RANK, 5, generator=generator),
        torch.randn(WORLD * PER_RANK, 7, generator=generator),
    )
    image_proj, text_proj = torch.nn.Linear(5, DIM), torch.nn.Linear(7, DIM)
    with torch.no_grad():
        for p in (*image_proj.parameters(), *text_proj.parameters()):
            p.copy_(torch.randn(p.shape, generator=generator))
    return images, texts, image_proj, text_proj


def loss_of(kind, image_proj, text_proj, images, texts):
    image_embeds = F.normalize(image_proj(images), dim=-1)
    text_embeds = F.normalize(text_proj(texts), dim=-1)
    scale = torch.tensor(5.0)
    if kind == "infonce":
        return infonce_loss(image_embeds, text_embeds, scale)
    return sigmoid_loss(image_embeds, text_embeds, scale, torch.tensor(-2.0))


def grads(*modules):
    return {f"{i}.{n}": p.grad.clone() for i, m in enumerate(modules) for n, p in m.named_parameters()}


def worker(rank, kind, port, out_dir):
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
    try:
        images, texts, image_proj, text_proj = setup()
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        loss = loss_of(kind, image_proj, text_proj, images[rows], texts[rows])
        loss.backward()
        result = grads(image_proj, text_proj)
        for grad in result.values():  # what DDP does: average the gradients over ranks
            dist.all_reduce(grad)
            grad /= WORLD
        mean_loss = loss.detach().clone()
        dist.all_reduce(mean_loss)
        result["loss"] = mean_loss / WORLD
        save_file(result, os.path.join(out_dir, f"rank{rank}.safetensors"))
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["infonce", "sigmoid"])
def test_two_process_loss_and_gradients_equal_the_global_batch(kind, tmp_path):
    mp.spawn(worker, args=(kind, free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    images, texts, image_proj, text_proj = setup()
    single = loss_of(kind, image_proj, text_proj, images, texts)
    single.backward()
    expected = grads(image_proj, text_proj)
    for rank in range(WORLD):
        got = load_file(tmp_path / f"rank{rank}.safetensors")
        torch.testing.assert_close(got.pop("loss"), single.detach(), atol=1e-6, rtol=0)
        assert got.keys() == expected.keys()
        for name, grad in expected.items():
            torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=0)


def test_local_negatives_alone_would_differ():
    # Guards the test above: a per-rank loss without gathering is not the global-batch loss.
    images, texts, image_proj, text_proj = setup()
    local = [
        loss_of("infonce", image_proj, text_proj, images[i::2][:PER_RANK], texts[i::2][:PER_RANK]) for i in (0, 1)
    ]
    assert abs(sum(local).item() / 2 - loss_of("infonce", image_proj, text_proj, images, texts).item()) > 1e-3
