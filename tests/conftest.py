"""Shared test fixtures: the real data in ../shared/data (skipped with a reason when absent) and a tiny vocab."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NEZHA_SHARED_DATA", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real public corpora); tests that need it skip on machines without it."""
    if not (SHARED_DATA / "MANIFEST.md").is_file():
        pytest.skip(f"real data folder {SHARED_DATA} is absent (set NEZHA_SHARED_DATA to use another)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def chinese_vocab(shared_data) -> Path:
    """The 21,128-entry Chinese BERT vocab.txt."""
    return shared_data / "vocab" / "vocab.txt"


@pytest.fixture()
def tiny_vocab(tmp_path) -> Path:
    """A small vocab with the special tokens, some Chinese characters, English pieces and digits."""
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(1, 4)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list("，。！？、的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年北京天安门爱中华人民共和")
    tokens += ["hello", "world", "##s", "##ing", "play", "12", "##3", "a", "b"]
    path = tmp_path / "vocab.txt"
    path.write_text("".join(t + "\n" for t in dict.fromkeys(tokens)), encoding="utf-8")
    return path
