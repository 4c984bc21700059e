"""The static family beyond the common contract: the CJK character tokenizer with hashed bigrams,
damaged or mismatched files, and settings refused with the fix."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from niche import ConfigError, ModelLoadError, TextClassifier
from niche.families.static import chars_tokens
from tests.conftest import toy_texts

ZH_POS = ["好", "棒", "满意", "喜欢", "推荐"]
ZH_NEG = ["差", "烂", "失望", "讨厌", "后悔"]
ZH_FILLER = ["这个", "酒店", "房间", "服务", "真的", "非常", "还是", "我们", "的", "了"]


def zh_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for i in range(n):
        lab = "正面" if i % 2 == 0 else "负面"
        words = list(rng.choice(ZH_FILLER, size=int(rng.integers(2, 8))))
        words.insert(int(rng.integers(0, len(words) + 1)), str(rng.choice(ZH_POS if lab == "正面" else ZH_NEG)))
        texts.append("".join(words))
        labels.append(lab)
    return texts, labels


def test_chars_tokens_split_cjk_and_keep_words() -> None:
    assert chars_tokens("房间很好 WiFi 5G，推荐!") == ["房", "间", "很", "好", "wifi", "5g", "，", "推", "荐", "!"]


def test_chinese_uses_chars_and_bigrams_and_round_trips(tmp_path: Path) -> None:
    clf = TextClassifier("static", epochs=30).fit(*zh_texts(200, 1), eval_data=zh_texts(60, 2))
    t = clf.info_["training"]
    assert t["tokenizer"] == "chars" and t["bigram_buckets"] == 50_000 and t["vocabulary"] > 10
    test, y = zh_texts(100, 3)
    assert np.mean(np.array(clf.predict(test)) == np.array(y)) >= 0.9
    out = clf.save(tmp_path / "zh")
    assert not (out / "tokenizer.json").exists() and (out / "static.safetensors").is_file()
    back = TextClassifier.load(out)
    np.testing.assert_allclose(back.predict_proba(test), clf.predict_proba(test), atol=1e-6)
    assert "hashed bigram" in (out / "README.md").read_text(encoding="utf-8")
    # a text of unknown tokens only still gets a distribution (the head's bias)
    assert np.allclose(back.predict_proba(["𠀀𠀁"]).sum(), 1.0)


def test_base_none_forces_chars_and_base_tokenizer_needs_a_base() -> None:
    clf = TextClassifier("static", base="none", epochs=3).fit(*toy_texts(60, 1), eval_data=toy_texts(20, 2))
    assert clf.info_["training"]["tokenizer"] == "chars"
    with pytest.raises(ConfigError, match="tokenizer='base' needs a base"):
        TextClassifier("static", base="none", tokenizer="base").fit(*toy_texts(60, 1))
    with pytest.raises(ConfigError, match="dropout must be in"):
        TextClassifier("static", dropout=1.5).fit(*toy_texts(60, 1))


def test_mismatched_and_damaged_files_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    clf = TextClassifier("static", base=str(tiny_bert), epochs=3).fit(*toy_texts(80, 1), eval_data=toy_texts(20, 2))
    out = clf.save(tmp_path / "m")
    meta = json.loads((out / "static.json").read_text(encoding="utf-8"))
    (out / "static.json").write_text(json.dumps(meta | {"n_unigrams": meta["n_unigrams"] + 5}), encoding="utf-8")
    with pytest.raises(ModelLoadError, match="do not belong together"):
        TextClassifier.load(out)
    (out / "static.json").write_text(json.dumps(meta), encoding="utf-8")
    (out / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ModelLoadError, match="damaged"):
        TextClassifier.load(out)
    (out / "tokenizer.json").unlink()
    with pytest.raises(ModelLoadError, match="missing tokenizer.json"):
        TextClassifier.load(out)
    data = (out / "static.safetensors").read_bytes()
    (out / "static.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        TextClassifier.load(out)


def test_token_vectors_are_cached_on_disk(tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from niche.families import static

    monkeypatch.setenv("NICHE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(static, "_TOKEN_VECTORS", {})
    vectors, tok = static.base_token_vectors(str(tiny_bert))
    files = list((tmp_path / "cache").glob("static-vectors-*.safetensors"))
    assert len(files) == 1 and not list((tmp_path / "cache").glob(".*tmp"))
    monkeypatch.setattr(static, "_TOKEN_VECTORS", {})
    again, tok2 = static.base_token_vectors(str(tiny_bert))  # from the file
    np.testing.assert_array_equal(again, vectors)
    assert tok2 == tok
    files[0].write_bytes(b"garbage")  # a damaged cache is recomputed, not trusted
    monkeypatch.setattr(static, "_TOKEN_VECTORS", {})
    third, _ = static.base_token_vectors(str(tiny_bert))
    np.testing.assert_allclose(third, vectors, atol=1e-5)
