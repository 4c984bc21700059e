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


def order_texts(n: int, seed: int) -> tuple[list[str], list[str]]:
    """Two classes with the same words: "not good" vs "good not" inside filler (only word order tells)."""
    rng = np.random.default_rng(seed)
    filler = ["the", "room", "was", "and", "staff", "food", "view", "bed"]
    texts, labels = [], []
    for i in range(n):
        lab = "neg" if i % 2 == 0 else "pos"
        words = list(rng.choice(filler, size=int(rng.integers(2, 7))))
        at = int(rng.integers(0, len(words) + 1))
        words[at:at] = ["not", "good"] if lab == "neg" else ["good", "not"]
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def reference_cnn(model, text: str) -> np.ndarray:
    """The cnn head computed the slow, obvious way from the saved arrays: one window at a time."""
    V, h = model.vectors_, model.head_
    uni = model.unigram_ids([text])[0]
    mean = np.asarray(model.bag([text]) @ V)[0]
    Wc, bc = h["conv.weight"], h["conv.bias"]
    width = Wc.shape[1] // V.shape[1]
    rows = [V[i] for i in uni] + [np.zeros(V.shape[1], np.float32)] * (width - 1)
    windows = [np.concatenate(rows[t:t + width]) for t in range(len(uni))]
    feats = np.max([np.maximum(Wc @ w + bc, 0) for w in windows], axis=0) if windows else np.zeros(len(bc))
    z = h["head.1.weight"] @ np.concatenate([mean, feats]) + h["head.1.bias"]
    e = np.exp(z - z.max())
    return e / e.sum()


def test_cnn_head_reads_word_order_and_round_trips(tmp_path: Path) -> None:
    train, dev, test = order_texts(300, 1), order_texts(80, 2), order_texts(100, 3)
    common = {"base": "none", "bigram_buckets": 0, "epochs": 30, "threads": 1}
    bag = TextClassifier("static", **common).fit(*train, eval_data=dev)
    cnn = TextClassifier("static", head="cnn", filters=16, width=2, **common).fit(*train, eval_data=dev)
    acc = {name: float(np.mean(np.array(c.predict(test[0])) == np.array(test[1]))) for name, c in
           (("bag", bag), ("cnn", cnn))}
    assert acc["bag"] <= 0.65 and acc["cnn"] >= 0.95, acc  # a mean of word vectors cannot see the order
    t = cnn.info_["training"]
    assert t["filters"] == 16 and t["width"] == 2
    # numpy prediction agrees with the torch training loop's dev accuracy at the kept epoch
    best = max(e["dev_accuracy"] for e in t["epochs"])
    assert np.mean(np.array(cnn.predict(dev[0])) == np.array(dev[1])) == pytest.approx(best)
    out = cnn.save(tmp_path / "cnn")
    back = TextClassifier.load(out)
    texts = test[0][:20] + ["", "unseen words only"]
    np.testing.assert_allclose(back.predict_proba(texts), cnn.predict_proba(texts), atol=1e-6)
    ref = np.stack([reference_cnn(back.model_, x) for x in texts])
    np.testing.assert_allclose(back.predict_proba(texts, batch_size=7), ref, atol=1e-5)
    assert "cnn" in (out / "README.md").read_text(encoding="utf-8")
    from safetensors.numpy import load_file, save_file

    arrays = load_file(str(out / "static.safetensors"))
    save_file(arrays | {"conv.weight": arrays["conv.weight"][:, :-1]}, str(out / "static.safetensors"))
    with pytest.raises(ModelLoadError, match=r"conv \(16, "):
        TextClassifier.load(out)
