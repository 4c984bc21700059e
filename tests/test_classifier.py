"""TextClassifier over both families: the shared contract, persistence, determinism, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from niche import TextClassifier, read_labeled
from niche.errors import ConfigError, DataError, ModelLoadError, ResumeError

from .conftest import TINY, toy_texts


def make(family: str, tiny_bert: Path, **kw) -> TextClassifier:
    if family == "sparse":
        return TextClassifier("sparse", **kw)
    return TextClassifier("transformer", base=str(tiny_bert), **(TINY | kw))


@pytest.fixture(scope="module")
def fitted(tiny_bert: Path) -> dict[str, TextClassifier]:
    tr, ty = toy_texts(160, seed=1)
    dv, dy = toy_texts(40, seed=2)
    return {f: make(f, tiny_bert).fit(tr, ty, eval_data=(dv, dy)) for f in ("sparse", "transformer")}


@pytest.mark.parametrize("family", ["sparse", "transformer"])
def test_contract(fitted: dict[str, TextClassifier], family: str, tmp_path: Path) -> None:
    clf = fitted[family]
    te, ty = toy_texts(60, seed=3)
    assert clf.classes_ == ["neg", "pos"]
    proba = clf.predict_proba(te)
    assert proba.shape == (60, 2) and np.allclose(proba.sum(1), 1, atol=1e-5)
    # a single string is handled exactly like a list of one
    assert clf.predict(te[0]) == clf.predict([te[0]]) == [clf.classes_[proba[0].argmax()]]
    m = clf.evaluate(te, ty)
    assert m["accuracy"] >= 0.9, m["accuracy"]  # the toy task is learnable by both families
    assert set(m) >= {"accuracy", "macro", "micro", "weighted", "per_class"}
    # save -> load gives the same probabilities
    d = clf.save(tmp_path / "model")
    again = TextClassifier.load(d)
    np.testing.assert_allclose(again.predict_proba(te), proba, atol=1e-6)
    info = json.loads((d / "niche.json").read_text())
    assert info["family"] == family and info["labels"] == ["neg", "pos"] and len(info["training"]["data_sha256"]) == 64
    assert {"torch", "transformers", "scikit-learn"} <= set(info["versions"])
    assert "## Evaluation (dev)" in (d / "README.md").read_text()
    # nothing pickled anywhere in the directory
    assert not [p for p in d.rglob("*") if p.suffix in {".pkl", ".pickle", ".bin", ".pt", ".joblib"}]


def test_transformer_dir_is_plain_hugging_face(fitted: dict[str, TextClassifier], tmp_path: Path) -> None:
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    clf = fitted["transformer"]
    d = clf.save(tmp_path / "hf")
    model = AutoModelForSequenceClassification.from_pretrained(str(d)).eval()
    tok = AutoTokenizer.from_pretrained(str(d))
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.label2id == {"neg": 0, "pos": 1}
    texts = toy_texts(8, seed=5)[0]
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
        hf = torch.softmax(model(**enc).logits, -1).numpy()
    np.testing.assert_allclose(clf.predict_proba(texts), hf, atol=1e-5)


@pytest.mark.parametrize("policy", ["head", "tail", "head+tail"])
def test_long_text_policy(tiny_bert: Path, policy: str) -> None:
    from niche.config import TransformerConfig
    from niche.families.transformer import TransformerModel

    tm = TransformerModel.from_base(TransformerConfig(base=str(tiny_bert), max_len=10, truncation=policy), ["a", "b"])
    words = "good bad great awful love hate fine poor best worst happy sad".split()
    (ids,) = tm.encode([" ".join(words)])
    vocab = tm.tokenizer.convert_ids_to_tokens(ids)
    assert len(ids) == 10 and vocab[0] == "[CLS]" and vocab[-1] == "[SEP]"
    expect = {"head": words[:8], "tail": words[-8:], "head+tail": words[:2] + words[-6:]}[policy]
    assert vocab[1:-1] == expect
    (short,) = tm.encode(["good day"])
    assert len(short) < 10  # short texts are not padded or cut


def test_same_seed_same_predictions(tiny_bert: Path) -> None:
    tr, ty = toy_texts(64, seed=1)
    te = toy_texts(20, seed=9)[0]
    a = make("transformer", tiny_bert, epochs=1, seed=3).fit(tr, ty).predict_proba(te)
    b = make("transformer", tiny_bert, epochs=1, seed=3).fit(tr, ty).predict_proba(te)
    c = make("transformer", tiny_bert, epochs=1, seed=4).fit(tr, ty).predict_proba(te)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


class Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_run(tiny_bert: Path, tmp_path: Path) -> None:
    tr, ty = toy_texts(96, seed=1)
    dv, dy = toy_texts(32, seed=2)
    te = toy_texts(30, seed=9)[0]
    kw = dict(epochs=2, checkpoint_every=2, eval_every=5, patience=0)
    full = make("transformer", tiny_bert, **kw).fit(tr, ty, eval_data=(dv, dy))

    def crash_at(step: int):
        def cb(state) -> None:
            if state.global_step == step:
                raise Crash()
        return cb

    ckpt = tmp_path / "ckpt"
    with pytest.raises(Crash):
        make("transformer", tiny_bert, **kw).fit(tr, ty, eval_data=(dv, dy), checkpoint_dir=ckpt, callbacks=(crash_at(7),))
    assert (ckpt / "step-6" / "state.json").is_file()  # steps 7.. were lost with the crash
    # without --resume, niche refuses to silently throw the checkpoint away
    with pytest.raises(ResumeError, match="--resume"):
        make("transformer", tiny_bert, **kw).fit(tr, ty, eval_data=(dv, dy), checkpoint_dir=ckpt)
    # another config cannot resume this checkpoint
    with pytest.raises(ResumeError, match="other data or settings"):
        make("transformer", tiny_bert, **(kw | {"lr": 1e-3})).fit(tr, ty, eval_data=(dv, dy), checkpoint_dir=ckpt, resume=True)
    resumed = make("transformer", tiny_bert, **kw).fit(tr, ty, eval_data=(dv, dy), checkpoint_dir=ckpt, resume=True)
    assert resumed.info_["training"]["steps"] == full.info_["training"]["steps"] == 12
    assert resumed.info_["training"]["evals"] == full.info_["training"]["evals"]
    a, b = full.model_.model.state_dict(), resumed.model_.model.state_dict()
    for k in a:
        torch_equal = np.allclose(a[k].numpy(), b[k].numpy(), atol=1e-6)
        assert torch_equal, k
    np.testing.assert_allclose(full.predict_proba(te), resumed.predict_proba(te), atol=1e-6)


def test_early_stopping_keeps_best(tiny_bert: Path) -> None:
    tr, ty = toy_texts(64, seed=1)
    clf = make("transformer", tiny_bert, epochs=6, patience=1, lr=3e-2).fit(tr, ty)
    ev = clf.info_["training"]["evals"]
    best = max(e["dev_macro_f1"] for e in ev)
    assert clf.info_["training"]["best_step"] == next(e["step"] for e in ev if e["dev_macro_f1"] == best)
    if clf.info_["training"]["stopped_early"]:
        assert len(ev) < 6
    assert clf.info_["metrics"]["dev"]["macro"]["f1"] == pytest.approx(best, abs=1e-9)


def test_class_weights_and_bad_config(tiny_bert: Path) -> None:
    tr, ty = toy_texts(40, seed=1)
    make("transformer", tiny_bert, epochs=1, class_weights=True).fit(tr, ty)
    with pytest.raises(ConfigError, match="unknown setting.*epoch"):
        TextClassifier("transformer", epoch=3).fit(tr, ty)
    with pytest.raises(ConfigError, match="truncation must be"):
        make("transformer", tiny_bert, truncation="middle").fit(tr, ty)
    with pytest.raises(ConfigError, match="exceeds the base model's 128 positions"):
        make("transformer", tiny_bert, max_len=512).fit(tr, ty)
    with pytest.raises(ConfigError, match="unknown family"):
        TextClassifier("svm").fit(tr, ty)


def test_input_errors(fitted: dict[str, TextClassifier], tmp_path: Path) -> None:
    with pytest.raises(DataError, match="2 texts but 1 labels"):
        TextClassifier("sparse").fit(["a", "b"], ["x"])
    with pytest.raises(DataError, match="expected a string"):
        fitted["sparse"].predict([1, 2])
    with pytest.raises(DataError, match="label 'meh' was never seen"):
        fitted["sparse"].evaluate(["good"], ["meh"])
    with pytest.raises(ModelLoadError, match="not trained"):
        TextClassifier("sparse").predict("x")
    with pytest.raises(ModelLoadError, match="model directory not found"):
        TextClassifier.load(tmp_path / "nope")


def test_atomic_save_keeps_old_model_on_crash(fitted: dict[str, TextClassifier], tmp_path: Path, monkeypatch) -> None:
    clf = fitted["sparse"]
    d = clf.save(tmp_path / "m")
    before = {p.name: p.read_bytes() for p in d.iterdir()}

    def boom(_d: Path) -> None:
        (_d / "sparse_vocab.json").write_text("half")
        raise OSError("disk full")

    monkeypatch.setattr(clf.model_, "save", boom)
    with pytest.raises(OSError):
        clf.save(d)
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temp dirs left behind
    TextClassifier.load(d)


def test_chinese_sparse_uses_char_ngrams() -> None:
    pos = ["这个酒店很好，服务周到", "房间干净，非常满意", "质量不错，值得购买", "很喜欢，下次还来", "物流很快，好评"]
    neg = ["服务太差了，不推荐", "房间很脏，失望", "质量差，退货", "不喜欢，太吵了", "物流慢，差评"]
    clf = TextClassifier("sparse").fit(pos * 4 + neg * 4, ["pos"] * 20 + ["neg"] * 20)
    assert clf.info_["training"]["analyzers"] == ["char"]
    assert clf.predict(["非常好，满意", "太差了，失望"]) == ["pos", "neg"]


def test_read_labeled_feeds_fit(tmp_path: Path, toy_csv) -> None:
    train, dev = toy_csv
    clf = TextClassifier("sparse").fit(read_labeled(train), eval_data=read_labeled(dev))
    assert clf.info_["training"]["dev"] == str(dev)


def test_cls_only_inference_matches_stock_forward(fitted: dict[str, TextClassifier]) -> None:
    """The inference shortcut (last layer for [CLS] only) gives the stock model's logits."""
    tm = fitted["transformer"].model_
    texts = toy_texts(50, seed=11)[0] + ["good " * 40, "bad"]  # mixed lengths: padding and truncation
    enc = tm.encode(texts)
    assert tm._cls_only_supported()
    tm.cls_only = False
    stock = tm.logits_for_ids(enc, batch_size=8)
    tm.cls_only = True
    fast = tm.logits_for_ids(enc, batch_size=8)
    np.testing.assert_allclose(fast, stock, atol=1e-5)
    assert (fast.argmax(1) == stock.argmax(1)).all()


def test_batch_plan_covers_every_input_once_and_pads_less(fitted: dict[str, TextClassifier]) -> None:
    from niche.encoders import plan_batches

    rng = np.random.default_rng(0)
    lengths = rng.permutation(np.r_[rng.integers(4, 20, 290), rng.integers(100, 120, 10)]).tolist()  # a few long
    fixed = plan_batches(lengths, 32, None)
    planned = plan_batches(lengths, 32, 64)
    for plan in (fixed, planned):
        flat = np.concatenate(plan)
        assert sorted(flat.tolist()) == list(range(300)) and max(len(g) for g in plan) <= 32
    padded = lambda plan: sum(len(g) * max(lengths[i] for i in g) for g in plan)  # noqa: E731
    assert padded(planned) < 0.8 * padded(fixed)
    assert plan_batches([], 8, 64) == []
    # and the planned batches give the same logits as one input at a time
    tm = fitted["transformer"].model_
    texts = toy_texts(40, seed=5)[0] + ["good " * 30, "bad"]
    enc = tm.encode(texts)
    one_by_one = np.concatenate([tm.logits_for_ids([e], batch_size=1) for e in enc])
    np.testing.assert_allclose(tm.logits_for_ids(enc, batch_size=16), one_by_one, atol=1e-5)
