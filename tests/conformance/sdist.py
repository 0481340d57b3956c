"""transformers' own common model tests, from the source distribution of the installed transformers.

The sdist ships `tests/test_modeling_common.py` (`ModelTesterMixin`, the contract every transformers model meets)
but not two modules it imports: `tests/generation/test_utils.py` (`GenerationTesterMixin`) and
`tests/exporters/test_export.py` (`ExportTesterMixin`). Both are stubbed here as empty mixins:
- `ExportTesterMixin` only contributes `torch.export` tests, which are not part of this contract;
- `GenerationTesterMixin`'s generate() tests need transformers' per-model generation testers, which the sdist lacks;
  hf_mm's generation checks (greedy, sampling, beam search, static cache and continuing from a returned cache,
  each with images and a left-padded batch) are in `tests/conformance/test_generation.py`.

Nothing is copied into this repository: the sdist is downloaded once (`pip download`, the package registry) into
`HF_MM_TRANSFORMERS_TESTS_CACHE` (default `~/.cache/hf_mm/transformers-tests`), keyed by the installed version, and
its `tests/*.py` files are imported from there as the package `transformers_common_tests`.
Run `python -m tests.conformance.sdist` to fetch it ahead of time.
"""

import importlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers

PACKAGE = "transformers_common_tests"
STUBS = {
    "generation/test_utils.py": '"""Stub: the sdist lacks tests/generation (see tests/conformance/sdist.py)."""\n\n\n'
    "class GenerationTesterMixin:\n    pass\n",
    "exporters/test_export.py": '"""Stub: the sdist lacks tests/exporters (see tests/conformance/sdist.py)."""\n\n\n'
    "class ExportTesterMixin:\n    pass\n",
}


def cache_root() -> Path:
    default = Path.home() / ".cache" / "hf_mm" / "transformers-tests"
    return Path(os.environ.get("HF_MM_TRANSFORMERS_TESTS_CACHE", default)) / transformers.__version__


def _download_and_unpack(root: Path) -> None:
    """`pip download` the sdist of the installed transformers; unpack its top-level `tests/*.py` into the package."""
    version = transformers.__version__
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", tmp,
             f"transformers=={version}"],
            check=True,
        )  # fmt: skip
        (archive,) = Path(tmp).glob("transformers-*.tar.gz")
        staging = Path(tempfile.mkdtemp(dir=root.parent))
        package = staging / PACKAGE
        package.mkdir()
        with tarfile.open(archive) as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts  # transformers-X/tests/<file>.py
                if len(parts) == 3 and parts[1] == "tests" and parts[2].endswith(".py") and member.isfile():
                    (package / parts[2]).write_bytes(tar.extractfile(member).read())
        if not (package / "test_modeling_common.py").exists():
            raise RuntimeError(f"transformers=={version}'s sdist has no tests/test_modeling_common.py")
        (package / "__init__.py").write_text("")
        for relative, text in STUBS.items():
            path = package / relative
            path.parent.mkdir(exist_ok=True)
            (path.parent / "__init__.py").write_text("")
            path.write_text(text)
        staging.rename(root)  # atomic: a half-unpacked cache is never seen


def common_tests():
    """The `test_modeling_common` module of the installed transformers' sdist (downloaded on first use)."""
    root = cache_root()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
        _download_and_unpack(root)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return importlib.import_module(f"{PACKAGE}.test_modeling_common")


if __name__ == "__main__":
    print(common_tests().__file__)
