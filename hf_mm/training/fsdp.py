"""FSDP2 and LM heads that are read by their weight.

accelerate's FSDP2 preparation gives the output embedding (`lm_head`) a unit of its own, gathered by that unit's
forward hook. A chunked loss never calls the module: it multiplies by `lm_head.weight` directly (hf_mm's
`ChunkedCrossEntropy`, TRL's fused LM head), so it meets the sharded weight. TRL then gathers it with
`DTensor.full_tensor()`, whose gradient each rank keeps to itself instead of reducing it across ranks, so the head's
update differs from one process's (tests/training/test_accelerate_fsdp.py found it: the head's gradient norm was off
by 50% on the first step). `gather_output_embeddings` unshards the unit before the loss, as its forward hook would;
FSDP's post-backward callback then reduce-scatters the head's gradient like every other unit's, and reshards it.
"""

import torch
from torch.distributed.fsdp import FSDPModule
from transformers.integrations import is_deepspeed_zero3_enabled


def gather_output_embeddings(model) -> None:
    """Unshard the output embedding's FSDP2 unit, if it has one of its own (a no-op otherwise, and when gathered)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, FSDPModule):
        head.unshard()


def is_sharded(model) -> bool:
    """Whether `model`'s parameters are split across ranks (FSDP2 units or DeepSpeed ZeRO-3), so that every forward
    pass needs every rank: generation included."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return False
    return is_deepspeed_zero3_enabled() or any(isinstance(module, FSDPModule) for module in model.modules())
