"""Small slices of real data: the bundled banking77 (always present) and ../shared (skipped without it)."""

from __future__ import annotations

import random

import pytest

from niche import TextClassifier, read_labeled

from .conftest import ROOT, SHARED


def _slice(path, n: int, seed: int = 0):
    d = read_labeled(path)
    return d.subset(sorted(random.Random(seed).sample(range(len(d)), min(n, len(d)))))


def test_sparse_on_bundled_banking77() -> None:
    tr = read_labeled(ROOT / "data" / "banking77" / "train.csv")
    te = _slice(ROOT / "data" / "banking77" / "test.csv", 1000)
    clf = TextClassifier("sparse").fit(tr)
    assert clf.evaluate(te)["accuracy"] >= 0.87  # measured 0.89 on the full test set


@pytest.mark.skipif(not (SHARED / "chnsenticorp").is_dir(), reason="../shared/data/chnsenticorp not present")
def test_sparse_chinese_chooses_analyzer_on_dev() -> None:
    from niche.families.sparse import have_jieba

    tr = _slice(SHARED / "chnsenticorp" / "train.csv", 4000)
    te = _slice(SHARED / "chnsenticorp" / "test.csv", 600)
    clf = TextClassifier("sparse").fit(tr)
    training = clf.info_["training"]
    tried = {row["analyzer"] for row in training["tuning"]}
    assert tried == ({"char", "char+words"} if have_jieba() else {"char"})
    assert training["analyzers"] in (["char"], ["char", "jieba"])
    assert training["chosen"]["analyzer"] in tried
    assert clf.evaluate(te)["accuracy"] >= 0.86


@pytest.mark.slow
def test_minilm_learns_banking77_slice() -> None:
    """Opt-in (-m slow): the real default base, a few minutes on 2 cores."""
    tr = _slice(ROOT / "data" / "banking77" / "train.csv", 3000)
    te = _slice(ROOT / "data" / "banking77" / "test.csv", 500)
    clf = TextClassifier("transformer", epochs=2, lr=1e-4).fit(tr)
    assert clf.evaluate(te)["accuracy"] >= 0.6
