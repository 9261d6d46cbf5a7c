"""The test session: no user cache, no network, and the data of :mod:`support` built once into
pytest's temporary folders."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import support

# No test may touch the user's torch or Hugging Face cache, or the network: `coco` / `imagenet`
# would download what is not cached, so downloads are switched off (tests that check the download
# path replace the downloader). Set at import, before any test module imports torch or
# huggingface_hub (which read them then); the folder goes when the session ends.
_HOMES = Path(tempfile.mkdtemp(prefix="fakesegment-test-homes-"))
os.environ["TORCH_HOME"] = str(_HOMES / "torch")
os.environ["HF_HOME"] = str(_HOMES / "hf")
(_HOMES / "torch").mkdir()
(_HOMES / "hf").mkdir()
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["FAKESEGMENT_OFFLINE"] = "1"


def pytest_unconfigure(config):
    shutil.rmtree(_HOMES, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def support_session(tmp_path_factory):
    """Everything :mod:`support` builds goes into this session's ``tmp_path_factory``, once."""
    support.open_session(tmp_path_factory)
    yield
    support.close_session()


@pytest.fixture(scope="session")
def pair_dirs(support_session) -> tuple[Path, Path]:
    """:func:`support.pair_dirs`: 4 real photos and their synthetic twins."""
    return support.pair_dirs()


@pytest.fixture(scope="session")
def fast_store(support_session) -> Path:
    """:func:`support.fast_store`: the 4+4 photos made with the fast model (random weights, seed 0)."""
    return support.fast_store()
