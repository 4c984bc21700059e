"""Batch prediction: formats, constant-memory chunks, resume with no duplicated or missing rows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from niche import TextClassifier
from niche.errors import DataError, ResumeError
from niche.predict import predict_file

from tests.conftest import toy_texts, write_csv


@pytest.fixture(scope="module")
def sparse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr, ty = toy_texts(200, seed=1)
    return TextClassifier("sparse").fit(tr, ty).save(tmp_path_factory.mktemp("m") / "sparse")


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".tsv"])
def test_predict_file_formats(sparse_dir: Path, tmp_path: Path, ext: str) -> None:
    import pandas as pd

    texts, labels = toy_texts(50, seed=4)
    inp = write_csv(tmp_path / "in.csv", list(zip(texts, labels)))
    clf = TextClassifier.load(sparse_dir)
    res = predict_file(clf, inp, tmp_path / f"out{ext}", str(sparse_dir), chunk_rows=7, progress=False)
    assert res == {"rows": 50, "new_rows": 50, "resumed_from": 0, "output": str(tmp_path / f"out{ext}")}
    df = (pd.read_json(tmp_path / f"out{ext}", lines=True) if ext == ".jsonl"
          else pd.read_csv(tmp_path / f"out{ext}", sep="," if ext == ".csv" else "\t"))
    assert list(df["text"]) == texts and list(df["label"]) == labels
    assert list(df["predicted"]) == clf.predict(texts)
    assert {"confidence", "p_neg", "p_pos"} <= set(df.columns)
    # a finished job is not redone or duplicated
    again = predict_file(clf, inp, tmp_path / f"out{ext}", str(sparse_dir), progress=False)
    assert again["new_rows"] == 0 and again["rows"] == 50


def test_resume_after_crash_mid_file(sparse_dir: Path, tmp_path: Path) -> None:
    texts, labels = toy_texts(100, seed=5)
    inp = write_csv(tmp_path / "in.csv", list(zip(texts, labels)))
    clf = TextClassifier.load(sparse_dir)
    predict_file(clf, inp, tmp_path / "ref.csv", str(sparse_dir), chunk_rows=10, progress=False)

    calls = {"n": 0}
    real = clf.predict_proba

    def flaky(batch, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt  # killed while scoring the 4th chunk
        return real(batch, **kw)

    clf.predict_proba = flaky
    with pytest.raises(KeyboardInterrupt):
        predict_file(clf, inp, tmp_path / "out.csv", str(sparse_dir), chunk_rows=10, progress=False)
    clf.predict_proba = real
    # simulate a torn write after the last committed chunk
    with (tmp_path / "out.csv").open("a") as f:
        f.write("half a row,withou")
    res = predict_file(clf, inp, tmp_path / "out.csv", str(sparse_dir), chunk_rows=10, progress=False)
    assert res["resumed_from"] == 30 and res["new_rows"] == 70
    assert (tmp_path / "out.csv").read_bytes() == (tmp_path / "ref.csv").read_bytes()


def test_resume_after_sigkill(sparse_dir: Path, tmp_path: Path) -> None:
    """A real kill -9 of `niche predict`, then a rerun: identical to an uninterrupted run."""
    texts, labels = toy_texts(30000, seed=6)
    inp = write_csv(tmp_path / "in.csv", list(zip(texts, labels)))
    out, ref = tmp_path / "out.jsonl", tmp_path / "ref.jsonl"
    cmd = [sys.executable, "-m", "niche", "predict", str(sparse_dir), str(inp), "--quiet", "--batch-size", "64"]
    subprocess.run(cmd + ["--out", str(ref)], check=True, capture_output=True)
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    prog = out.with_name(out.name + ".progress.json")
    deadline = time.time() + 60
    while time.time() < deadline:
        if prog.exists() and json.loads(prog.read_text() or "{}").get("rows", 0) > 0:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    state = json.loads(prog.read_text())
    if state.get("complete"):
        pytest.skip("the job finished before it could be killed (machine too fast for this input size)")
    r = subprocess.run(cmd + ["--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "resumed after" in r.stdout
    assert out.read_bytes() == ref.read_bytes()


def test_predict_errors(sparse_dir: Path, tmp_path: Path) -> None:
    clf = TextClassifier.load(sparse_dir)
    inp = write_csv(tmp_path / "in.csv", [("good", "x"), ("", "y")])
    with pytest.raises(DataError, match=r"line 3, column 'text': the text is empty"):
        predict_file(clf, inp, tmp_path / "o.csv", progress=False)
    with pytest.raises(DataError, match=r"column 'review' not found"):
        predict_file(clf, inp, tmp_path / "o2.csv", text_col="review", progress=False)
    with pytest.raises(DataError, match=r"unsupported output extension '.parquet'"):
        predict_file(clf, inp, tmp_path / "o.parquet", progress=False)
    (tmp_path / "exists.csv").write_text("precious\n")
    ok = write_csv(tmp_path / "ok.csv", [("good", "x")])
    with pytest.raises(ResumeError, match="--overwrite"):
        predict_file(clf, ok, tmp_path / "exists.csv", progress=False)
    assert (tmp_path / "exists.csv").read_text() == "precious\n"
    predict_file(clf, ok, tmp_path / "exists.csv", overwrite=True, progress=False)
    assert "predicted" in (tmp_path / "exists.csv").read_text()
