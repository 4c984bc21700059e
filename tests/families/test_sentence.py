"""The ``sentence`` family beyond the shared contract: SetFit's pair pool, the contrastive steps
really move the encoder (and help on the toy task), the head's C chosen on dev or by cross-validation,
a stopped fit, and damaged directories refused with the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from niche import ModelLoadError, TextClassifier
from niche.families.sentence import HEAD, draw_pairs
from tests.conftest import toy_texts

TRAIN, DEV = toy_texts(80, seed=21), toy_texts(30, seed=22)


def test_pair_pool_is_setfits() -> None:
    y = np.array([0, 0, 0, 1, 1, 2])
    pairs = draw_pairs(y, iterations=3, seed=0)
    assert len(pairs) == 2 * 3 * len(y)
    for i, j, target in pairs:
        assert (y[i] == y[j]) == (target == 1.0)
        assert i != j or np.sum(y == y[i]) == 1  # a text pairs with itself only when alone in its label
    assert draw_pairs(y, 3, seed=0) == pairs and draw_pairs(y, 3, seed=1) != pairs


def test_contrastive_steps_tune_the_encoder(tiny_bert: Path) -> None:
    frozen = TextClassifier("sentence", base=str(tiny_bert), max_len=32).fit(*TRAIN, eval_data=DEV)
    tuned = TextClassifier("sentence", base=str(tiny_bert), max_len=32, pair_steps=40, lr=1e-3).fit(*TRAIN, eval_data=DEV)
    t = tuned.info_["training"]
    assert t["encoder"] == "contrastive" and t["pair_steps_done"] == 40 and len(t["loss_curve"]) > 1
    assert frozen.info_["training"]["encoder"] == "frozen"
    a = frozen.model_.embed(DEV[0][:8])
    b = tuned.model_.embed(DEV[0][:8])
    assert not np.allclose(a, b, atol=1e-3)  # the encoder moved
    np.testing.assert_allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
    assert tuned.evaluate(*DEV)["accuracy"] >= 0.8
    assert t["C_chosen_by"] == "dev log-loss" and set(t["C_tried"]) == {"0.1", "1.0", "10.0", "100.0"}
    assert t["C"] == float(min(t["C_tried"], key=t["C_tried"].get))


def test_head_c_without_dev_is_cross_validated() -> None:
    from niche.config import SentenceConfig
    from niche.families.sentence import fit_head

    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 1, (20, 8)) + 2, rng.normal(0, 1, (20, 8)) - 2]).astype(np.float32)
    y = np.array([0] * 20 + [1] * 20)
    W, b, facts = fit_head(X, y, X[:0], y[:0], 3, SentenceConfig())  # label 2 never seen
    assert facts["C_chosen_by"].startswith("5-fold") and W.shape == (3, 8) and b[2] < -10
    z = X @ W.T + b
    assert np.mean(z.argmax(1) == y) == 1.0


def test_stopped_early_by_a_callback(tiny_bert: Path) -> None:
    from niche.families import FitTask, get, make_config
    from niche.data import LabeledData

    def stop(state) -> None:  # type: ignore[no-untyped-def]
        if state.global_step >= 5:
            state.stopped_early = True

    labels = sorted(set(TRAIN[1]))
    y = np.array([labels.index(v) for v in TRAIN[1]])
    yd = np.array([labels.index(v) for v in DEV[1]])
    task = FitTask(LabeledData(*TRAIN, "t", list(range(len(y)))), LabeledData(*DEV, "d", list(range(len(yd)))),
                   labels, y, yd, "sha", callbacks=(stop,))
    _, facts = get("sentence").fit(make_config("sentence", base=str(tiny_bert), pair_steps=50, max_len=32), task)
    assert facts["pair_steps_done"] == 5 and facts["stopped_early"] is True


def test_damaged_directories_are_refused(tiny_bert: Path, tmp_path: Path) -> None:
    clf = TextClassifier("sentence", base=str(tiny_bert), max_len=32).fit(*TRAIN, eval_data=DEV)
    out = clf.save(tmp_path / "m")
    (out / HEAD).write_bytes((out / HEAD).read_bytes()[:40])
    with pytest.raises(ModelLoadError, match="head.safetensors.*(truncated|damaged)"):
        TextClassifier.load(out)
    out = clf.save(tmp_path / "m2")
    (out / "model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        TextClassifier.load(out)
