"""``auto``: a search within a budget of seconds on tiny data — the leaderboard's structure, the saved
winner (an ordinary directory of its family) reloads and predicts identically, a SIGKILL mid-search
resumes without retraining finished candidates, the selection rules, and bad budgets refused."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from niche import ConfigError, TextClassifier
from niche.config import AutoConfig
from niche.families import FAMILIES
from niche.families.auto import choose, pareto_front
from tests.conftest import toy_texts, write_csv

TRAIN, DEV, TEST = toy_texts(160, seed=1), toy_texts(40, seed=2), toy_texts(50, seed=3)[0]
ROW_KEYS = {"name", "family", "status", "dev_accuracy", "dev_macro_f1", "train_seconds", "docs_per_s", "size_mb"}


@pytest.fixture(scope="module")
def searched(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory):
    work = tmp_path_factory.mktemp("auto")
    clf = TextClassifier("auto", max_minutes=0.75, base=str(tiny_bert)).fit(*TRAIN, eval_data=DEV,
                                                                          checkpoint_dir=work / "ckpt")
    return clf, clf.save(work / "winner")


def test_leaderboard_structure(searched) -> None:
    clf, out = searched
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    names = [r["name"] for r in board["candidates"]]
    assert names == ["sparse", "static", "sentence", "transformer", "ensemble"]
    for r in board["candidates"]:
        assert r["status"] in ("trained", "skipped", "failed"), r
        if r["status"] == "trained":
            assert ROW_KEYS <= set(r) and 0 <= r["dev_accuracy"] <= 1 and r["docs_per_s"] > 0 and r["size_mb"] >= 0
        else:
            assert r["note"], r  # a skipped or failed candidate says why
    winners = [r for r in board["candidates"] if r.get("winner")]
    assert len(winners) == 1 and winners[0]["name"] == board["winner"] and winners[0]["status"] == "trained"
    assert board["budget_seconds"] == 45 and set(board["plan"]) == set(names)
    assert clf.family == winners[0]["family"] in FAMILIES
    # the winner is the best on dev (ties within 0.1 point go to the faster)
    best = max(r["dev_accuracy"] for r in board["candidates"] if r["status"] == "trained")
    assert winners[0]["dev_accuracy"] >= best - 0.001
    md = (out / "leaderboard.md").read_text(encoding="utf-8")
    assert "| candidate |" in md and f"**{board['winner']}**" in md
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    assert "How this model was chosen" in (out / "README.md").read_text(encoding="utf-8")


def test_winner_is_an_ordinary_directory_that_reloads_identically(searched) -> None:
    clf, out = searched
    info = json.loads((out / "niche.json").read_text(encoding="utf-8"))
    assert info["family"] == clf.family and info["training"]["auto"]["winner"] == clf.leaderboard_["winner"]
    back = TextClassifier.load(out)
    assert back.family == clf.family
    np.testing.assert_allclose(back.predict_proba(TEST), clf.predict_proba(TEST), atol=1e-6)
    assert back.predict(TEST) == clf.predict(TEST)


def _niche(*args: object) -> list[str]:
    return [sys.executable, "-m", "niche", *map(str, args)]


def test_kill_mid_search_resumes_without_retraining(tiny_bert: Path, tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", list(zip(*toy_texts(300, seed=4))))
    dev = write_csv(tmp_path / "dev.csv", list(zip(*toy_texts(60, seed=5))))
    out = tmp_path / "m"
    state = tmp_path / "m.checkpoints" / "auto" / "state.json"
    args = ("train", "--family", "auto", "--max-minutes", 2, "--base", tiny_bert, "--data", train, "--eval", dev,
            "--out", out, "--quiet")
    env = os.environ | {"TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.Popen(_niche(*args), env=env, start_new_session=True, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    deadline = time.time() + 240
    finished: list[str] = []
    try:
        while time.time() < deadline and proc.poll() is None:  # kill once a candidate is finished
            if state.is_file():
                try:
                    rows = json.loads(state.read_text(encoding="utf-8"))["rows"]
                except ValueError:  # being replaced this instant
                    rows = []
                finished = [r["name"] for r in rows if r["status"] == "trained"]
                if finished:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the search ended before it could be killed: " + proc.stdout.read().decode()[-2000:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert finished and not out.exists()
    done = subprocess.run(_niche(*args, "--resume"), env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    board = json.loads((out / "leaderboard.json").read_text(encoding="utf-8"))
    rows = {r["name"]: r for r in board["candidates"]}
    for name in finished:
        assert rows[name].get("resumed") is True, rows[name]  # loaded, not retrained
    assert TextClassifier.load(out).predict(TEST[:5])
    assert not (tmp_path / "m.checkpoints").exists()  # cleaned up after the saved winner


@pytest.mark.parametrize("minutes, message", [(0, "max_minutes must be"), (-5, "max_minutes must be"),
                                              (1e9, "a week at most"), (math.nan, "max_minutes must be")])
def test_bad_budgets_are_refused(minutes: float, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TextClassifier("auto", max_minutes=minutes).fit(*TRAIN)


def test_bad_budget_from_the_cli(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "train.csv", list(zip(*TRAIN)))
    r = subprocess.run(_niche("train", "--family", "auto", "--max-minutes", "0", "--data", train, "--out",
                              tmp_path / "m"), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "max_minutes must be" in " ".join((r.stdout + r.stderr).split())
    assert "Traceback" not in r.stdout + r.stderr and not (tmp_path / "m").exists()
    with pytest.raises(ConfigError, match="candidates must be"):
        AutoConfig(candidates="sparse,bert").validate()


def _row(name: str, acc: float, speed: float) -> dict:
    return {"name": name, "status": "trained", "dev_accuracy": acc, "docs_per_s": speed}


def test_selection_rules() -> None:
    rows = [_row("sparse", 0.905, 5000), _row("static", 0.901, 20000), _row("transformer", 0.9105, 60),
            {"name": "ensemble", "status": "skipped"}]
    assert choose(rows, AutoConfig())[0] == "transformer"
    assert choose(rows, AutoConfig(prefer="speed"))[0] == "static"  # within 1 point of the best
    assert choose(rows, AutoConfig(min_docs_per_s=1000))[0] == "sparse"
    name, why = choose(rows, AutoConfig(min_docs_per_s=10**6))
    assert name == "static" and "no candidate reached" in why
    tie = [_row("sparse", 0.9000, 5000), _row("transformer", 0.9005, 60)]
    assert choose(tie, AutoConfig())[0] == "sparse"  # a tie within 0.1 point: the faster
    assert sorted(pareto_front(rows)) == ["sparse", "static", "transformer"]
    few = [_row("sparse", 0.75, 5000), _row("static", 0.70, 9000), _row("transformer", 0.70, 60)]
    assert choose(few, AutoConfig(), n_dev=20)[0] == "transformer"  # within one of 20 dev texts
    assert choose(few, AutoConfig(), n_dev=1000)[0] == "sparse"
    # 32 dev texts cannot tell 65.6 % from 53.1 % (95 % interval +-16 points): SetFit's recipe wins the tie
    shots = [_row("sparse", 0.53125, 5000), _row("static", 0.65625, 20000), _row("sentence", 0.5625, 300),
             _row("transformer", 0.5625, 250)]
    name, why = choose(shots, AutoConfig(), n_dev=32)
    assert name == "sentence" and "cannot tell apart" in why
    assert choose(shots, AutoConfig(), n_dev=5000)[0] == "static"
    assert choose([_row("sparse", 0.95, 5000), _row("sentence", 0.60, 300)], AutoConfig(), n_dev=40)[0] == "sparse"
    with pytest.raises(ConfigError, match="no candidate"):
        choose([{"name": "sparse", "status": "failed"}], AutoConfig())


def test_transformer_plan_epochs_subset_or_skip() -> None:
    from niche.families.auto import fit_transformer_plan

    probe = {"max_len": 32, "per_text": 0.01, "infer": 0.002, "probe": "probe"}
    profile = {"rows": 9000, "dev_rows": 1000}  # one epoch ~92 s
    lots = fit_transformer_plan(probe, profile, 10_000)
    assert lots["decision"] == "train" and lots["epochs"] == 5 and "rows" not in lots  # capped at MOST_EPOCHS
    two = fit_transformer_plan(probe, profile, 250)
    assert two["epochs"] == 2 and two["seconds"] <= 250
    part = fit_transformer_plan(probe, profile, 80)  # under one epoch: a seeded subset that fits
    assert part["decision"] == "train" and part["epochs"] == 1 and 2000 <= part["rows"] < 9000
    assert part["seconds"] <= 80 and "subset" in part["why"]
    assert fit_transformer_plan(probe, profile, 20)["decision"] == "skip"
    tiny = fit_transformer_plan(probe, {"rows": 500, "dev_rows": 100}, 10_000)
    assert tiny["epochs"] == 20  # small data: up to 20 passes, early stopping keeps the best


def test_transformer_reserve_stretches_when_training_runs_slower_than_the_probe() -> None:
    """The reserve after the transformer's deadline (dev predictions, speed runs) is timed on the probe;
    when the cores are shared and training runs 2x slower, the deadline moves earlier by 2x the reserve."""
    from niche.families.auto import slowdown
    from niche.train.loop import TrainState

    per_text, infer, batch, n_dev = 0.01, 0.002, 32, 1000
    on_time = TrainState(global_step=100, seconds=100 * batch * per_text + n_dev * infer, evals=[{"step": 50}])
    assert slowdown(on_time, per_text, infer, batch, n_dev) == pytest.approx(1.0)
    twice = TrainState(global_step=100, seconds=2 * on_time.seconds, evals=[{"step": 50}])
    assert slowdown(twice, per_text, infer, batch, n_dev) == pytest.approx(2.0)
    faster = TrainState(global_step=100, seconds=on_time.seconds / 2, evals=[{"step": 50}])
    assert slowdown(faster, per_text, infer, batch, n_dev) == 1.0  # never shrinks the reserve
    crawling = TrainState(global_step=100, seconds=50 * on_time.seconds, evals=[{"step": 50}])
    assert slowdown(crawling, per_text, infer, batch, n_dev) == 3.0  # capped
    warming = TrainState(global_step=5, seconds=60.0)
    assert slowdown(warming, per_text, infer, batch, n_dev) == 1.0  # too few steps to tell


def test_dev_texts_inside_training_texts_are_reported() -> None:
    """SST-2-like data: dev phrases that are sub-phrases of training sentences reward memorising; the
    search counts them (>= 10 % of a dev split of >= 200 texts) for the leaderboard's warning."""
    from niche.data import LabeledData
    from niche.families import FitTask
    from niche.families.auto import dev_leak, leaderboard_md
    from niche.inspection import contained_in

    assert contained_in(["The movie was good .", "badly made"],
                        ["movie was good", "bad", "badly made", "THE   movie", "x"]) == [True, False, True, True, False]
    texts, labels = toy_texts(400, seed=7)
    sentences = [f"{t} number {i} indeed" for i, t in enumerate(texts)]
    dev_texts = [f"{t} number {i}" for i, t in enumerate(texts[:150])] + [f"fresh text {i}" for i in range(150)]
    dev_labels = labels[:150] + labels[150:300]
    lab = sorted(set(labels))
    task = FitTask(LabeledData(sentences, labels, "t", list(range(400))), LabeledData(dev_texts, dev_labels, "d",
                   list(range(300))), lab, np.array([lab.index(v) for v in labels]),
                   np.array([lab.index(v) for v in dev_labels]), "sha")
    assert dev_leak(task) == {"dev_inside_train": 150}
    few = dataclasses.replace(task, dev=task.dev.subset(list(range(140, 300))), y_dev=task.y_dev[140:])
    assert dev_leak(few) == {}  # under 2 x 100 dev texts: not checked
    board = {"budget_seconds": 60, "spent_seconds": 30, "winner": "sparse", "why": "w", "candidates": [],
             "profile": {"rows": 400, "dev_rows": 300, "classes": 2, "cjk": False, "dev_inside_train": 150}}
    assert "**Warning**: 150 of the dev texts occur inside training texts" in leaderboard_md(board)
