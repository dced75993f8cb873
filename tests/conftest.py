import os
import sys
from pathlib import Path

import pytest

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
