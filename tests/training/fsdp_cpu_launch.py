"""`accelerate launch --config_file recipes/accelerate/fsdp.yaml tests/training/fsdp_cpu_launch.py -m MODULE ARGS`:
run a training CLI under accelerate's own FSDP2 on CPU processes (gloo).

accelerate enables FSDP only on an accelerator: `AcceleratorState` turns the FSDP plugin on for a multi-GPU (or XPU,
NPU ...) process group and ignores it for a CPU one, which then trains as plain DDP. This script lifts that one gate
with exactly the assignments accelerate makes for a GPU group (the state's distributed type, the plugin, its mixed
precision, and PartialState's shared distributed type), then runs MODULE as `python -m` would. Everything else is
accelerate's, the Trainer's and hf_mm's own code: the FSDP2 wrapping from the recipe's settings, the sharded
checkpoints, the resume, and the final save.
"""

import runpy
import sys

from accelerate.state import AcceleratorState, PartialState
from accelerate.utils import DistributedType

_init = AcceleratorState.__init__


def _init_with_fsdp_on_cpu(self, *args, fsdp_plugin=None, **kwargs):
    _init(self, *args, fsdp_plugin=fsdp_plugin, **kwargs)
    if fsdp_plugin is not None and self.distributed_type == DistributedType.MULTI_CPU:
        self.distributed_type = DistributedType.FSDP
        if self._mixed_precision != "no":
            fsdp_plugin.set_mixed_precision(self._mixed_precision)
        self.fsdp_plugin = fsdp_plugin
        PartialState._shared_state["distributed_type"] = self.distributed_type


if __name__ == "__main__":
    if sys.argv[1:2] != ["-m"] or len(sys.argv) < 3:
        raise SystemExit("usage: fsdp_cpu_launch.py -m MODULE [ARGS ...]")
    AcceleratorState.__init__ = _init_with_fsdp_on_cpu
    module = sys.argv[2]
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
