"""Good model directories (trained once per session) that the reliability tests copy and break."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from ..conftest import TINY, toy_texts


@pytest.fixture(scope="session")
def good_dirs(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained directory per family: ``sparse`` and ``transformer`` (tiny BERT, one epoch)."""
    from niche import TextClassifier

    root = tmp_path_factory.mktemp("good")
    texts, labels = toy_texts(48)
    TextClassifier("sparse").fit(texts, labels).save(root / "sparse")
    TextClassifier("transformer", base=str(tiny_bert), **(TINY | {"epochs": 1})).fit(texts, labels).save(
        root / "transformer")
    return {"sparse": root / "sparse", "transformer": root / "transformer"}


@pytest.fixture
def copy_of(good_dirs: dict[str, Path], tmp_path: Path):
    """``copy_of(family)``: a fresh copy of the good directory of ``family`` to break."""
    def make(family: str, name: str = "model") -> Path:
        d = tmp_path / name
        shutil.copytree(good_dirs[family], d)
        return d

    return make
