"""`accelerate launch --config_file recipes/accelerate/{fsdp,deepspeed_zero3}.yaml tests/training/cpu_launch.py -m
MODULE ARGS`: run a training CLI under accelerate's own FSDP2 or DeepSpeed on CPU processes (gloo).

accelerate runs both only on an accelerator, and on CPU falls back without an error:
- FSDP: `AcceleratorState` turns the FSDP plugin on for a multi-GPU (or XPU, NPU ...) process group and ignores it
  for a CPU one, which then trains as plain DDP.
- DeepSpeed: with `--use_cpu` it is refused; without, `PartialState` finds no accelerator backend, so every rank
  believes it is alone (one process, unsharded data) while DeepSpeed's engine sees the whole group.
This script lifts those gates with exactly the assignments accelerate makes for an accelerator (FSDP: the state's
distributed type, the plugin, its mixed precision, PartialState's shared distributed type; DeepSpeed: a gloo process
group of the launched ranks, as `_prepare_backend` picks one for a multi-CPU launch), then runs MODULE as
`python -m` would. Everything else is accelerate's, the Trainer's, DeepSpeed's and hf_mm's own code: the wrapping
from the recipe's settings, the sharded checkpoints, the resume, and the final save.
"""

import os
import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__
_prepare_backend = PartialState._prepare_backend


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


def _prepare_backend_with_deepspeed_on_cpu(self, cpu=False, sagemaker_dp=False, backend=None):
    backend, distributed_type = _prepare_backend(self, cpu, sagemaker_dp, backend)
    launched = int(os.environ.get("LOCAL_RANK", -1)) != -1
    if launched and not cpu and distributed_type == DistributedType.NO:
        if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            return "gloo", DistributedType.MULTI_CPU  # PartialState then switches it to DEEPSPEED
    return backend, distributed_type


if __name__ == "__main__":
    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        raise SystemExit("usage: cpu_launch.py -m MODULE [ARGS ...]")
    AcceleratorState.__init__ = _init_with_fsdp_on_cpu
    PartialState._prepare_backend = _prepare_backend_with_deepspeed_on_cpu
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
