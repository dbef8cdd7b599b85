"""Shared fixtures. The suite is offline and CPU-only: HF_HUB_OFFLINE is forced before transformers loads."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def tiny_chat_lm():
    """The tiny random causal chat LM and its byte-level tokenizer (session-wide: treat as read-only)."""
    from plus.models import load_causal_lm

    return load_causal_lm("tiny-chat-lm", device="cpu")


@pytest.fixture(scope="session")
def tiny_encoder():
    from plus.models import load_backbone

    return load_backbone("tiny-encoder", device="cpu")
