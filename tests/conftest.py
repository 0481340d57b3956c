import os

# No test touches the network: every model and tokenizer is built in code or saved to a temp dir first.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def quick_demo_model(tmp_path_factory):
    """The demo's `warm-start` model, trained once per session (a random tower and a new LM, aligned then instructed
    briefly on shapes VQA) and saved: the starting point of the evaluation and RL tests."""
    from hf_mm.apps import demo

    folder = tmp_path_factory.mktemp("quick-demo") / "model"
    demo.main(["--preset", "warm-start", "--output-dir", str(folder)])
    return folder
