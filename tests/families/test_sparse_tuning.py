"""The sparse family chooses its loss, C and (Chinese) analyzer on dev and calibrates its probabilities
there (issue 17, item 1): the choice and the grid are recorded, the calibrated model reloads to the same
probabilities, and settings that cannot apply are refused with the fix."""

from __future__ import annotations

import random

import numpy as np
import pytest

from niche import ConfigError, TextClassifier
from niche.evaluation import calibration_scores
from niche.families.sparse import have_jieba

POS = ["great", "wonderful", "loved", "excellent", "superb", "fine", "happy"]
NEG = ["awful", "terrible", "hated", "boring", "poor", "sad", "broken"]


def toy(n: int, seed: int, noise: float = 0.15) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        lab = "pos" if i % 2 else "neg"
        words = rng.sample(POS if lab == "pos" else NEG, 2) + rng.sample(POS + NEG, 2) + ["movie", "the"]
        rng.shuffle(words)
        if rng.random() < noise:
            lab = "neg" if lab == "pos" else "pos"
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def test_choice_and_grid_are_recorded_and_reload_identically(tmp_path):
    X, y = toy(300, 0)
    dev = toy(100, 1)
    clf = TextClassifier("sparse", cv_folds=0).fit(X, y, eval_data=dev)  # chosen on dev alone
    t = clf.info_["training"]
    assert t["chosen"]["loss"] in {"nblr", "lr", "svm"}
    losses = {row["loss"] for row in t["tuning"]}
    assert losses == {"nblr", "lr", "svm"}, losses  # binary: all three tried
    best = max(r["dev_accuracy"] for r in t["tuning"])
    chosen = [r for r in t["tuning"] if (r["loss"], r["C"]) == (t["chosen"]["loss"], t["chosen"]["C"])]
    assert chosen and chosen[0]["dev_accuracy"] == best
    assert t["calibration"]["kind"] == "platt"
    assert "log_loss" in clf.info_["metrics"]["dev"] and 0 <= clf.info_["metrics"]["dev"]["ece"] <= 1
    clf.save(tmp_path / "m")
    again = TextClassifier.load(tmp_path / "m")
    test = toy(50, 2)[0]
    np.testing.assert_allclose(again.predict_proba(test), clf.predict_proba(test), rtol=1e-6)
    assert "chosen on the dev split" in (tmp_path / "m" / "README.md").read_text(encoding="utf-8")


def test_calibration_lowers_dev_log_loss_and_keeps_labels():
    X, y = toy(300, 3, noise=0.3)
    dev = toy(200, 4, noise=0.3)
    raw = TextClassifier("sparse", calibrate=False).fit(X, y, eval_data=dev)
    cal = TextClassifier("sparse").fit(X, y, eval_data=dev)
    assert raw.info_["training"]["chosen"] == cal.info_["training"]["chosen"]
    # Platt's bias moves the threshold from s = 0 to s = -b/a: only texts scored between the two change label
    c = cal.info_["training"]["calibration"]
    s = raw.model_.decision_function(dev[0])[:, 0]
    lo, hi = sorted((0.0, -c["b"] / c["a"]))
    changed = [r != k for r, k in zip(raw.predict(dev[0]), cal.predict(dev[0]))]
    assert all(lo <= v <= hi for v, ch in zip(s, changed) if ch), (lo, hi)
    assert sum(changed) < len(changed) / 10
    before = calibration_scores(dev[1], raw.predict_proba(dev[0]), raw.classes_)["log_loss"]
    after = calibration_scores(dev[1], cal.predict_proba(dev[0]), cal.classes_)["log_loss"]
    assert after <= before + 1e-9, (before, after)


def test_multiclass_tries_lr_and_svm_and_fixed_settings_are_kept():
    rng = random.Random(5)
    words = {c: [f"{c}{i}" for i in range(6)] for c in "abc"}
    X = [" ".join(rng.sample(words[c], 3)) for c in "abc" for _ in range(40)]
    y = [c for c in "abc" for _ in range(40)]
    clf = TextClassifier("sparse").fit(X, y)
    assert {r["loss"] for r in clf.info_["training"]["tuning"]} == {"lr", "svm"}
    assert clf.info_["training"]["calibration"]["kind"] == "temperature"
    fixed = TextClassifier("sparse", loss="svm", C=0.5, min_df=2).fit(X, y)
    assert len(fixed.info_["training"]["tuning"]) == 1  # nothing to choose: one fit
    assert fixed.info_["training"]["chosen"] == {"analyzer": "word+char", "loss": "svm", "C": 0.5, "min_df": 2}
    with pytest.raises(ConfigError, match="two classes"):
        TextClassifier("sparse", loss="nblr").fit(X, y)


@pytest.mark.skipif(not have_jieba(), reason="jieba (niche[zh]) is not installed")
def test_chinese_tries_jieba_words_and_reloads(tmp_path):
    rng = random.Random(6)
    good, bad = ["服务很好", "非常满意", "干净舒适", "推荐入住"], ["环境太差", "非常失望", "房间很脏", "不会再来"]
    X, y = [], []
    for i in range(200):
        lab = i % 2
        X.append("，".join(rng.sample(good if lab else bad, 2) + rng.sample(good + bad, 1)) + "。")
        y.append("pos" if lab else "neg")
    clf = TextClassifier("sparse").fit(X, y)
    assert {r["analyzer"] for r in clf.info_["training"]["tuning"]} == {"char", "char+words"}
    clf.save(tmp_path / "zh")
    np.testing.assert_allclose(TextClassifier.load(tmp_path / "zh").predict_proba(X[:20]), clf.predict_proba(X[:20]),
                               rtol=1e-6)


def test_a_loaded_model_saves_again(tmp_path) -> None:
    from niche import TextClassifier
    from tests.conftest import toy_texts

    clf = TextClassifier("sparse").fit(*toy_texts(80, 1), eval_data=toy_texts(20, 2))
    back = TextClassifier.load(clf.save(tmp_path / "a"))
    again = TextClassifier.load(back.save(tmp_path / "b"))  # the loaded vectorizers have no vocabulary_
    probe = toy_texts(10, 3)[0]
    assert again.predict_proba(probe).tolist() == back.predict_proba(probe).tolist()


def test_min_df_auto_tries_1_on_short_texts_and_keeps_what_dev_prefers():
    # each class has words seen in one training text only, which min_df=2 drops; dev uses the same words
    rng = random.Random(3)
    X, y, Xd, yd = [], [], [], []
    for c in "abc":
        for i in range(30):
            w = f"{c}rare{i}"
            X.append(f"{w} common{rng.randrange(5)}")
            y.append(c)
            Xd.append(f"{w} common{rng.randrange(5)}")
            yd.append(c)
    clf = TextClassifier("sparse", analyzer="word", loss="lr", cv_folds=0).fit(X, y, eval_data=(Xd, yd))
    tuning = clf.info_["training"]["tuning"]
    assert [r["min_df"] for r in tuning if "min_df" in r] == [1]  # the one extra fit, after the grid
    assert clf.info_["training"]["chosen"]["min_df"] == 1
    def acc(m):
        return sum(p == t for p, t in zip(m.predict(Xd), yd)) / len(yd)

    assert acc(clf) > 0.9
    again = TextClassifier("sparse", analyzer="word", loss="lr", min_df=2, cv_folds=0).fit(X, y, eval_data=(Xd, yd))
    assert not any("min_df" in r for r in again.info_["training"]["tuning"])
    assert acc(again) < acc(clf)
    long_texts = [t + " filler" * 60 for t in X]
    big = TextClassifier("sparse", analyzer="word", loss="lr", cv_folds=0).fit(long_texts, y, eval_data=([t + " filler" * 60 for t in Xd], yd))
    assert big.info_["training"]["chosen"]["min_df"] == 2  # mean > 200 characters: not tried


def test_small_data_chooses_by_cross_validation_on_train_and_dev(tmp_path):
    # 400 labelled texts (<= CV_MAX_ROWS): every grid point is scored out-of-fold over train + dev
    X, y = toy(300, 0)
    dev = toy(100, 1)
    clf = TextClassifier("sparse").fit(X, y, eval_data=dev)
    t = clf.info_["training"]
    cv = [r for r in t["tuning"] if "cv_accuracy" in r]
    assert {r["cv_folds"] for r in cv} == {5} and t["chosen"]["cv_folds"] == 5
    assert {r["loss"] for r in cv} == {"nblr", "lr", "svm"} and {r["min_df"] for r in cv} == {1, 2}  # short texts
    best = max(cv, key=lambda r: (r["cv_accuracy"], r["cv_macro_f1"]))
    assert {k: best[k] for k in ("analyzer", "loss", "C", "min_df")} == {k: t["chosen"][k] for k in
                                                                         ("analyzer", "loss", "C", "min_df")}
    # the chosen setting is then fitted on train alone: one more row, scored on dev, and calibrated there
    final = [r for r in t["tuning"] if "dev_accuracy" in r]
    assert len(final) == 1 and (final[0]["loss"], final[0]["C"]) == (t["chosen"]["loss"], t["chosen"]["C"])
    assert t["calibration"]["kind"] == "platt"
    clf.save(tmp_path / "m")
    assert "5-fold cross-validation" in (tmp_path / "m" / "README.md").read_text(encoding="utf-8")
    probe = toy(30, 2)[0]
    np.testing.assert_allclose(TextClassifier.load(tmp_path / "m").predict_proba(probe), clf.predict_proba(probe),
                               rtol=1e-6)
    # the out-of-fold scores are real: a grid point that cannot fit (C tiny) scores worse than the best
    assert min(r["cv_accuracy"] for r in cv) <= best["cv_accuracy"]
    with pytest.raises(ConfigError, match="cv_folds"):
        TextClassifier("sparse", cv_folds=-1).fit(X, y, eval_data=dev)
