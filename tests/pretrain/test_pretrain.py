"""Pretraining, fill-mask, explain and the scratch family, with tiny corpora and tiny models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from tests.conftest import TINY, toy_texts, write_csv

from niche import TextClassifier
from niche.cli import app
from niche.errors import ConfigError, DataError, ModelLoadError, ResumeError
from niche.pretrain import PretrainConfig, build_corpus, encode_corpus, mask_tokens, pretrain

runner = CliRunner()

ZH = ["这家酒店的服务很好", "房间很干净，早餐也不错", "价格太贵了，不推荐", "快递很快，包装完好", "质量很差，用了两天就坏了",
      "屏幕清晰，电池耐用", "客服态度很差", "物流太慢了", "味道很好，下次还来", "书的内容很精彩"]
# tiny scratch-model settings: a few seconds on 2 cores
SMALL = dict(layers=1, hidden=64, heads=2, intermediate=128, max_len=32, vocab_size=200, batch_size=16,
             eval_every=20, checkpoint_every=10, lr=5e-3, warmup_ratio=0.05)


def zh_corpus(tmp_path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = random.Random(seed)
    lines = ["，".join(rng.sample(ZH, 2)) + f"{i % 7}" for i in range(n)]
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


# -- masking ----------------------------------------------------------------------------------

def test_masking_statistics_follow_bert() -> None:
    rng = np.random.default_rng(0)
    B, T, V = 400, 100, 1000
    ids = rng.integers(10, V, (B, T))
    words = np.tile(np.arange(T), (B, 1))
    words[:, 0] = words[:, -1] = -1  # [CLS]/[SEP]
    words[:, 80:] = -1  # padding
    ids[:, 80:] = 0
    cands = np.arange(10, V)
    x, y = mask_tokens(ids, words, rng, mask_id=4, candidates=cands, prob=0.15)
    chosen = y != -100
    assert not chosen[words < 0].any(), "special and padding positions are never chosen"
    share = chosen.sum() / (words >= 0).sum()
    assert 0.14 < share < 0.16
    assert (y[chosen] == ids[chosen]).all()
    masked = (x == 4) & chosen
    kept = (x == ids) & chosen
    rand = chosen & ~masked & ~kept
    n = chosen.sum()
    assert 0.78 < masked.sum() / n < 0.82
    assert 0.08 < kept.sum() / n < 0.12  # includes the rare random draw of the same id
    assert 0.08 < rand.sum() / n < 0.12
    assert np.isin(x[rand], cands).all()
    assert (x[~chosen] == ids[~chosen]).all()


def test_whole_word_masking_takes_all_pieces_of_a_word() -> None:
    rng = np.random.default_rng(1)
    B, T = 300, 41
    words = np.full((B, T), -1)
    words[:, 1:40] = np.repeat(np.arange(13), 3)  # 13 words of 3 pieces each
    ids = np.arange(B * T).reshape(B, T) % 500 + 10
    _, y = mask_tokens(ids, words, rng, mask_id=4, candidates=np.arange(10, 500))
    chosen = (y != -100)[:, 1:40].reshape(B, 13, 3)
    assert (chosen.all(-1) | ~chosen.any(-1)).all(), "a word is masked whole or not at all"
    assert 0.12 < chosen.mean() < 0.18


def test_jieba_whole_word_groups(tmp_path: Path) -> None:
    pytest.importorskip("jieba")
    from niche.pretrain import train_tokenizer

    tok = train_tokenizer(ZH * 5, PretrainConfig(vocab_size=300, min_frequency=1))
    enc = encode_corpus(tok, ["我们喜欢北京的酒店"], max_len=32, masking="jieba")
    toks = tok.convert_ids_to_tokens(enc.ids[0].tolist())
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    words = enc.words[0][1:-1]
    # each character is its own token, but characters of one jieba word share a word number
    assert len(set(words.tolist())) < len(words)
    import jieba

    assert len(set(words.tolist())) == len(list(jieba.cut("我们喜欢北京的酒店")))


# -- corpus ---------------------------------------------------------------------------------------

def test_corpus_dedup_and_exclude(tmp_path: Path) -> None:
    a = tmp_path / "a.txt"
    a.write_text("one text\n one  text \n\nheld-out review\nanother\n", encoding="utf-8")
    b = write_csv(tmp_path / "b.csv", [("another", "x"), ("fresh", "y")])
    ev = write_csv(tmp_path / "test.csv", [("held-out review", "pos"), ("never seen", "neg")])
    texts, st = build_corpus([a, b], exclude=[ev])
    assert texts == ["one text", "another", "fresh"]
    assert (st.read, st.empty, st.duplicates, st.excluded, st.kept) == (7, 1, 2, 1, 3)
    with pytest.raises(DataError, match="column 'body' not found"):
        build_corpus([b], text_col="body")
    with pytest.raises(DataError, match="empty after removing"):
        build_corpus([ev], exclude=[ev])


# -- pretraining ----------------------------------------------------------------------------------

def test_scratch_pretraining_learns_and_fine_tunes(tmp_path: Path) -> None:
    corpus = zh_corpus(tmp_path)
    out = tmp_path / "zh-mlm"
    rep = pretrain([corpus], out, PretrainConfig(epochs=12, dev_texts=20, **SMALL), progress=False)
    curve = [v for _, v in rep["train_loss"]]
    assert np.mean(curve[-3:]) < curve[0] - 1.0, curve  # the MLM loss falls
    assert rep["dev_loss"] and all(np.isfinite(v) for _, v in rep["dev_loss"])
    assert rep["corpus"]["duplicates"] > 0 and rep["tokens_seen"] > 0
    for f in ("config.json", "model.safetensors", "tokenizer.json", "pretrain_report.json", "loss_curve.png"):
        assert (out / f).is_file(), f
    assert not (tmp_path / "zh-mlm.checkpoints").exists()
    from transformers import AutoModelForMaskedLM

    m = AutoModelForMaskedLM.from_pretrained(str(out))
    assert m.cls.predictions.decoder.weight.data_ptr() == m.bert.embeddings.word_embeddings.weight.data_ptr()

    from niche.pretrain import FillMask

    fm = FillMask(out)
    res = fm("这家酒店的服[MASK]很好", top_k=5)
    assert len(res) == 1 and len(res[0]) == 5
    assert res[0][0]["score"] >= res[0][-1]["score"]
    assert "务" in [c["token"] for c in res[0]], "the pretrained model fills a memorized character"
    two = fm("这家酒店的[MASK][MASK]很好", top_k=2)
    assert len(two) == 2
    with pytest.raises(DataError, match=r"no \[MASK\]"):
        fm("没有掩码")

    # the masked LM is a base `niche train` fine-tunes
    rows = [(t, "pos" if ("好" in t or "不错" in t) else "neg") for t in ZH * 6]
    clf = TextClassifier("transformer", base=str(out), **TINY).fit([r[0] for r in rows], [r[1] for r in rows])
    assert clf.predict(["房间很干净"])[0] in ("pos", "neg")


def test_pretraining_resumes_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = zh_corpus(tmp_path, n=120)
    cfg = dict(SMALL, max_steps=24, epochs=5, dev_texts=0)
    pretrain([corpus], tmp_path / "full", PretrainConfig(**cfg), progress=False)

    import niche.train.checkpoint as training

    real = training.save_checkpoint
    calls = {"n": 0}

    def crash_after_first(*a, **k):
        path = real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated kill after step 10")
        return path

    monkeypatch.setattr(training, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        pretrain([corpus], tmp_path / "cut", PretrainConfig(**cfg), progress=False)
    assert not (tmp_path / "cut").exists(), "nothing is written until the run finishes"
    with pytest.raises(ResumeError, match="--resume"):
        pretrain([corpus], tmp_path / "cut", PretrainConfig(**cfg), progress=False)
    with pytest.raises(ResumeError, match="another corpus or other settings"):
        pretrain([corpus], tmp_path / "cut", PretrainConfig(**(cfg | {"lr": 1e-3})), resume=True, progress=False)
    pretrain([corpus], tmp_path / "cut", PretrainConfig(**cfg), resume=True, progress=False)
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)


def test_continued_pretraining_creates_head_and_extends_vocab(tmp_path: Path, tiny_bert: Path) -> None:
    texts, _ = toy_texts(200, seed=3)
    texts = [t + " zorblax" for t in texts]  # a new word the base vocab splits into letters
    corpus = tmp_path / "en.txt"
    corpus.write_text("\n".join(texts), encoding="utf-8")
    out = tmp_path / "adapted"
    rep = pretrain([corpus], out, PretrainConfig(base=str(tiny_bert), extend_vocab=5, max_steps=15, batch_size=16,
                                                 max_len=32, lr=1e-3, dev_texts=0), progress=False)
    assert rep["mode"] == "continued" and rep["mlm_head_created"]
    assert "zorblax" in rep["added_examples"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.tokenize("good zorblax") == ["good", "zorblax"]
    assert tok.tokenize("zorblaxes")[0] != "zorblax", "added words match whole words only"
    from niche.pretrain import FillMask

    assert len(FillMask(out)("the movie was [MASK]", top_k=3)[0]) == 3
    with pytest.raises(ModelLoadError, match="no masked-LM head"):
        FillMask(tiny_bert)
    with pytest.raises(ConfigError, match="continued pretraining"):
        PretrainConfig(extend_vocab=3).validate()


def test_pretrain_cli_reports_exclusions(tmp_path: Path) -> None:
    corpus = zh_corpus(tmp_path, n=80)
    held = write_csv(tmp_path / "test.csv", [(corpus.read_text(encoding="utf-8").splitlines()[0], "pos")])
    out = tmp_path / "m"
    r = runner.invoke(app, ["pretrain", "--corpus", str(corpus), "--exclude", str(held), "--out", str(out),
                            "--layers", "1", "--hidden", "32", "--heads", "2", "--intermediate", "64", "--max-len", "32",
                            "--vocab-size", "200", "--max-steps", "5", "--batch-size", "16", "--quiet"])
    assert r.exit_code == 0, r.output
    rep = json.loads((out / "pretrain_report.json").read_text())
    assert rep["corpus"]["excluded"] == 1
    assert "excluded" in r.output
    r = runner.invoke(app, ["fill-mask", str(out), "这家酒店的服[MASK]很好", "-k", "2"])
    assert r.exit_code == 0 and len(r.output.strip().splitlines()) == 2, r.output
    r = runner.invoke(app, ["pretrain", "--corpus", str(tmp_path / "missing.txt"), "--out", str(out)])
    assert r.exit_code == 2 and "not found" in r.output
    r = runner.invoke(app, ["pretrain", "--corpus", str(corpus), "--out", str(out), "--hidden", "30", "--heads", "4"])
    assert r.exit_code == 2 and "multiple of heads" in r.output


# -- explain ---------------------------------------------------------------------------------------

def test_explain_arrays_plots_and_cli(tmp_path: Path, tiny_bert: Path) -> None:
    from niche.explain import explain, plot_attention

    texts, labels = toy_texts(160, seed=1)
    clf = TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(texts, labels)
    res = explain(clf, "the food was awful")
    L, H, T, _ = res["attentions"].shape
    assert (L, H) == (2, 2) and T == len(res["tokens"]) == 6
    np.testing.assert_allclose(res["attentions"].sum(-1), 1.0, atol=1e-4)
    np.testing.assert_allclose(res["cls_attention"].sum(-1), 1.0, atol=1e-4)
    assert res["importance"].shape == (T,) and abs(res["importance"].sum() - 1) < 1e-4
    assert res["importance"][0] == 0 and res["importance"][-1] == 0  # [CLS]/[SEP]
    right = 0
    for text, word, gold in (("a great movie", "great", "pos"), ("this service is really bad", "bad", "neg"),
                             ("it was the best food", "best", "pos"), ("the food was awful", "awful", "neg")):
        r = explain(clf, text)
        if r["label"] == gold:  # where the model is right, the sentiment word carries the decision
            right += 1
            assert r["tokens"][int(r["importance"].argmax())] == word, (text, r["importance"])
    assert right >= 2
    assert res["label"] == clf.predict(["the food was awful"])[0]
    assert clf.predict_proba(["the food was awful"])[0].max() == pytest.approx(max(res["scores"].values()), abs=1e-5)
    paths = plot_attention(res, tmp_path / "plots")
    assert all(p.stat().st_size > 1000 for p in paths)
    clf.save(tmp_path / "model")
    r = runner.invoke(app, ["explain", str(tmp_path / "model"), "a great movie", "--out", str(tmp_path / "ex")])
    assert r.exit_code == 0, r.output
    assert "predicted" in r.output and (tmp_path / "ex" / "attention_heads.png").is_file()
    data = json.loads((tmp_path / "ex" / "explain.json").read_text())
    assert np.asarray(data["attentions"]).shape[:2] == (2, 2)
    # plain encoder: attention only
    enc = explain(str(tiny_bert), "good movie")
    assert enc["importance"] is None and enc["attentions"].shape[:2] == (2, 2)
    sparse = TextClassifier("sparse").fit(texts, labels)
    with pytest.raises(ConfigError, match="transformer"):
        explain(sparse, "good")
    with pytest.raises(ConfigError, match="not a label"):
        explain(clf, "good", target="meh")


# -- scratch family ----------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["bilstm", "transformer"])
def test_scratch_family_learns_toy_task(tmp_path: Path, arch: str) -> None:
    texts, labels = toy_texts(240, seed=1)
    dev_t, dev_y = toy_texts(60, seed=2)
    clf = TextClassifier("scratch", arch=arch, layers=1, hidden=32, heads=2, intermediate=64, vocab_size=200,
                         epochs=8, batch_size=16, lr=3e-3, max_len=32, patience=0)
    clf.fit(texts, labels, eval_data=(dev_t, dev_y))
    acc = float(np.mean(np.array(clf.predict(dev_t)) == np.array(dev_y)))
    assert acc >= 0.9, acc
    clf.save(tmp_path / "m")
    back = TextClassifier.load(tmp_path / "m")
    np.testing.assert_allclose(back.predict_proba(dev_t), clf.predict_proba(dev_t), atol=1e-6)
    assert back.info_["training"]["arch"] == arch


def test_scratch_static_vectors_and_cli(tmp_path: Path) -> None:
    texts, labels = toy_texts(120, seed=1)
    vec = tmp_path / "vec.txt"
    rng = np.random.default_rng(0)
    vec.write_text("3 16\n" + "".join(f"{w} {' '.join(f'{v:.3f}' for v in rng.normal(size=16))}\n"
                                       for w in ("good", "bad", "movie")), encoding="utf-8")
    clf = TextClassifier("scratch", arch="bilstm", hidden=16, vectors=str(vec), vocab_size=200, epochs=1, max_len=32)
    clf.fit(texts, labels)
    sv = clf.info_["training"]["static_vectors"]
    assert sv["covered"] == 3 and sv["dim"] == 16
    emb = clf.model_.model.get_input_embeddings().weight
    good = clf.model_.tokenizer.convert_tokens_to_ids("good")
    assert emb.shape[1] == 16 and torch.isfinite(emb[good]).all()
    bad = TextClassifier("scratch", arch="transformer", hidden=32, heads=2, vectors=str(vec), epochs=1, max_len=32)
    with pytest.raises(DataError, match="16 dimensions"):
        bad.fit(texts, labels)
    train = write_csv(tmp_path / "t.csv", list(zip(texts, labels)))
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "cli"), "--family", "scratch",
                            "--arch", "bilstm", "--hidden", "16", "--epochs", "1", "--max-len", "32", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", "--data", str(train), "--out", str(tmp_path / "x"), "--arch", "bilstm"])
    assert r.exit_code == 2 and "--arch is a setting of the scratch family; you chose --family transformer" in " ".join(r.output.split())


# -- ensembles ------------------------------------------------------------------------------------

def test_ensemble_weights_save_load_and_cli(tmp_path: Path, tiny_bert: Path) -> None:
    from niche import build_ensemble

    texts, labels = toy_texts(160, seed=1)
    dev_t, dev_y = toy_texts(60, seed=2)
    dev = write_csv(tmp_path / "dev.csv", list(zip(dev_t, dev_y)))
    a = TextClassifier("sparse").fit(texts, labels).save(tmp_path / "a")
    b = TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(texts, labels).save(tmp_path / "b")
    from niche import read_labeled

    ens = build_ensemble([a, b], read_labeled(dev), steps=10)
    w = [m["weight"] for m in ens.info_["members"]]
    assert abs(sum(w) - 1) < 1e-9 and all(0 <= x <= 1 for x in w)
    pa, pb = (TextClassifier.load(d).predict_proba(dev_t) for d in (a, b))
    expected = w[0] * pa + w[1] * pb
    np.testing.assert_allclose(ens.predict_proba(dev_t), expected, atol=1e-6)
    assert ens.info_["metrics"]["dev"]["accuracy"] >= max(m["dev_accuracy"] for m in ens.info_["members"])
    ens.save(tmp_path / "ens")
    back = TextClassifier.load(tmp_path / "ens")
    assert back.family == "ensemble"
    np.testing.assert_allclose(back.predict_proba(dev_t), expected, atol=1e-6)
    assert "ensemble" in (tmp_path / "ens" / "README.md").read_text()
    r = runner.invoke(app, ["ensemble", "--model", str(a), "--model", str(b), "--eval", str(dev), "--test", str(dev),
                            "--out", str(tmp_path / "ens2")])
    assert r.exit_code == 0, r.output
    assert TextClassifier.load(tmp_path / "ens2").predict(["a great movie"])[0] in ("pos", "neg")
    # served like any model; a BiLSTM answers explain requests with attention: null instead of failing
    from fastapi.testclient import TestClient

    from niche.serving.app import create_app

    lstm = TextClassifier("scratch", arch="bilstm", hidden=16, epochs=1, max_len=32).fit(texts, labels).save(tmp_path / "l")
    with TestClient(create_app({"ens": tmp_path / "ens", "lstm": lstm})) as c:
        r1 = c.post("/v1/models/ens/classify", json={"inputs": ["a great movie"], "explain": True})
        r2 = c.post("/v1/models/lstm/classify", json={"inputs": ["a great movie"], "explain": True})
    assert r1.status_code == 200 and r2.status_code == 200, (r1.text, r2.text)
    assert r1.json()["predictions"][0]["attention"] is None and r2.json()["predictions"][0]["attention"] is None
    other = TextClassifier("sparse").fit(["x good", "y bad", "z ok"] * 4, ["a", "b", "c"] * 4).save(tmp_path / "c")
    with pytest.raises(ConfigError, match="same label set"):
        build_ensemble([a, other], read_labeled(dev))
    with pytest.raises(ConfigError, match="at least 2"):
        build_ensemble([a], read_labeled(dev))
