"""One LLaVA train step's peak memory, measured alone in a fresh process (the OS's peak resident set is monotonic,
so each model gets its own): `python -m benchmarks.step_memory FOLDER hf_mm|reference INPUTS.safetensors`.

Prints JSON {"peak_bytes": ...}: on CUDA, `max_memory_allocated` minus what was allocated before the step; on CPU,
the peak resident set (`VmHWM`) during the step minus the resident set before it (glibc returns large blocks to the OS when
they are freed, so the peak counts every live tensor, the transient ones included)."""

import json
import os
import sys

import torch
from safetensors.torch import load_file


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """This process image's peak resident set (`VmHWM`). Not `ru_maxrss`: Linux carries that across fork and exec,
    so a child started by a large parent would report the parent's peak."""
    with open("/proc/self/status") as status:
        line = next(line for line in status if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024  # kB


def main(folder: str, kind: str, inputs_path: str) -> dict:
    if kind == "reference":
        from transformers import LlavaForConditionalGeneration as model_class
    else:
        from hf_mm import HfMmLlavaForConditionalGeneration as model_class
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = model_class.from_pretrained(folder).to(device).train()
    inputs = {key: value.to(device) for key, value in load_file(inputs_path).items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = resident_bytes()
    model(**inputs).loss.backward()
    if device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - before
    else:
        peak = peak_resident_bytes() - before
    return {"peak_bytes": peak}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:4])))
