import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The shared data folder (GSM8K, MATH, Qwen2.5 tokenizer); tests that need it skip
    when GRPO_DATA_DIR is unset."""
    path = os.environ.get("GRPO_DATA_DIR")
    if not path:
        pytest.skip("GRPO_DATA_DIR is not set")
    return Path(path)


@pytest.fixture
def failing_compiler(monkeypatch):
    """torch.compile with a backend that raises, as a broken Triton or C++ toolchain would."""
    def broken(gm, example_inputs):
        raise RuntimeError("made to fail")

    import fast_decode
    torch._dynamo.reset()
    monkeypatch.setattr(fast_decode, "_compiled", lambda fn: torch.compile(fn, backend=broken, dynamic=True))
    yield
    torch._dynamo.reset()
