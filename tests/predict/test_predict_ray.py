"""Batch scoring on Ray (``--engine ray``): a real local Ray cluster (2 CPUs), no mocks.

The Ray engine must write what the local engine writes (byte for byte for CSV/JSONL output), keep
input order, and survive a scoring actor killed mid-job with no lost or duplicated rows.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytest

from niche import TextClassifier
from niche.errors import ConfigError, DataError, ResumeError
from niche.predict import predict_file

from tests.conftest import TINY, toy_texts, write_csv

try:
    import ray
except ImportError:
    pytest.skip("Ray is not installed (pip install 'niche[ray]'); the Ray engine cannot be tested",
                allow_module_level=True)

from niche.predict import predict_file_ray  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> object:
    """One local cluster for the module; predict_file_ray reuses a cluster this process joined."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def sparse_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr, ty = toy_texts(200, seed=1)
    return TextClassifier("sparse").fit(tr, ty).save(tmp_path_factory.mktemp("m") / "sparse")


@pytest.fixture(scope="module")
def transformer_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr, ty = toy_texts(160, seed=1)
    clf = TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(tr, ty, progress=False)
    return clf.save(tmp_path_factory.mktemp("m") / "transformer")


def _inputs(tmp_path: Path, n: int, seed: int) -> tuple[Path, Path]:
    """The same rows as CSV and as Parquet (with an extra id column, and a text with a comma/quote)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts, labels = toy_texts(n, seed=seed)
    texts[3] = 'good, "quoted" and\nmultiline'
    csv_path = tmp_path / "in.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as f:
        import csv

        w = csv.writer(f)
        w.writerow(["id", "text", "label"])
        w.writerows([(f"r{i:05d}", t, y) for i, (t, y) in enumerate(zip(texts, labels))])
    pq_path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [f"r{i:05d}" for i in range(n)], "text": texts, "label": labels}), pq_path,
                   row_group_size=97)
    return csv_path, pq_path


def _local(model_dir: Path, inp: Path, out: Path, chunk_rows: int) -> Path:
    predict_file(TextClassifier.load(model_dir), inp, out, str(model_dir), chunk_rows=chunk_rows, progress=False)
    return out


@pytest.mark.parametrize("family,in_ext,out_ext,workers", [
    ("sparse", ".csv", ".csv", 2),
    ("sparse", ".parquet", ".jsonl", 1),
    ("transformer", ".parquet", ".csv", 2),
])
def test_same_bytes_as_local_engine(family: str, in_ext: str, out_ext: str, workers: int, sparse_dir: Path,
                                    transformer_dir: Path, tmp_path: Path) -> None:
    import torch

    model = sparse_dir if family == "sparse" else transformer_dir
    csv_in, pq_in = _inputs(tmp_path, 700, seed=7)
    inp = csv_in if in_ext == ".csv" else pq_in
    ref = _local(model, inp, tmp_path / f"local{out_ext}", chunk_rows=64)
    # same torch thread count as the local run: float sums (hence a rare 6th decimal) depend on it
    res = predict_file_ray(model, inp, tmp_path / f"ray{out_ext}", chunk_rows=64, num_workers=workers,
                           threads=torch.get_num_threads(), progress=False)
    assert res["rows"] == 700 and res["engine"] == "ray" and res["num_workers"] == workers
    assert (tmp_path / f"ray{out_ext}").read_bytes() == ref.read_bytes()
    assert not (tmp_path / f"ray{out_ext}.partial").exists()


def test_parquet_output_matches_local_csv(sparse_dir: Path, tmp_path: Path) -> None:
    """Parquet output: same columns, same order, same labels; probabilities equal to the local CSV's
    6-decimal strings; input columns keep their Parquet types."""
    import pandas as pd
    import pyarrow.parquet as pq

    csv_in, pq_in = _inputs(tmp_path, 300, seed=8)
    ref = pd.read_csv(_local(sparse_dir, csv_in, tmp_path / "local.csv", chunk_rows=64), dtype=str,
                      keep_default_na=False)
    for inp in (csv_in, pq_in):
        out = tmp_path / f"ray-{inp.suffix[1:]}.parquet"
        predict_file_ray(sparse_dir, inp, out, chunk_rows=64, num_workers=1, progress=False)
        t = pq.read_table(out)
        assert t.column_names == list(ref.columns)
        assert str(t.schema.field("confidence").type) == "double" and str(t.schema.field("id").type) == "string"
        got = t.to_pandas()
        assert list(got["id"]) == list(ref["id"]) and list(got["text"]) == list(ref["text"])
        assert list(got["predicted"]) == list(ref["predicted"])
        for c in ["confidence", "p_neg", "p_pos"]:
            assert [f"{x:.6f}" for x in got[c]] == list(ref[c])


def _scorer_pids() -> set[int]:
    """PIDs of this test's Ray scoring actors (descendants of this process: the cluster is ours)."""
    import psutil

    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "ChunkScorer" in " ".join(p.cmdline()):
                pids.add(p.pid)
        except psutil.Error:
            pass
    return pids


@pytest.mark.skipif(sys.platform != "linux", reason="finds the actor processes with psutil on Linux")
def test_worker_killed_mid_job_is_retried(transformer_dir: Path, tmp_path: Path) -> None:
    """SIGKILL one scoring actor after the first chunk is written: Ray restarts it and reruns its
    chunks; the output is still identical to the local engine (no lost or duplicated rows)."""
    csv_in, _ = _inputs(tmp_path, 2000, seed=9)
    ref = _local(transformer_dir, csv_in, tmp_path / "local.csv", chunk_rows=100)
    seen: dict[str, object] = {"killed": None, "after": set(), "rows_at_kill": None}

    def on_chunk(rows: int) -> None:
        pids = _scorer_pids()
        if seen["killed"] is None and pids:
            victim = max(pids)
            os.kill(victim, signal.SIGKILL)
            seen["killed"], seen["before"], seen["rows_at_kill"] = victim, pids, rows
        elif seen["killed"] is not None:
            seen["after"] |= pids

    import torch

    res = predict_file_ray(transformer_dir, csv_in, tmp_path / "ray.csv", chunk_rows=100, num_workers=2,
                           threads=torch.get_num_threads(), progress=False, on_chunk=on_chunk)
    assert seen["killed"] is not None and seen["rows_at_kill"] < 2000  # killed mid-job
    assert res["rows"] == 2000
    assert (tmp_path / "ray.csv").read_bytes() == ref.read_bytes()
    assert seen["after"] - seen["before"], "no restarted scoring actor was seen after the kill"


def test_errors(sparse_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write_csv(tmp_path / "bad.csv", [("good", "x")] * 150 + [("", "y")])
    with pytest.raises(DataError, match=r"line 152, column 'text': the text is empty"):  # raised inside Ray
        predict_file_ray(sparse_dir, bad, tmp_path / "o.csv", chunk_rows=64, num_workers=1, progress=False)
    assert not (tmp_path / "o.csv").exists() and not (tmp_path / "o.csv.partial").exists()
    ok = write_csv(tmp_path / "ok.csv", [("good", "x")])
    with pytest.raises(DataError, match=r"column 'review' not found"):
        predict_file_ray(sparse_dir, ok, tmp_path / "o.csv", text_col="review", progress=False)
    with pytest.raises(DataError, match=r"unsupported output extension '.xlsx'"):
        predict_file_ray(sparse_dir, ok, tmp_path / "o.xlsx", progress=False)
    (tmp_path / "exists.csv").write_text("precious\n")
    with pytest.raises(ResumeError, match="--overwrite"):
        predict_file_ray(sparse_dir, ok, tmp_path / "exists.csv", progress=False)
    assert (tmp_path / "exists.csv").read_text() == "precious\n"
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(ConfigError, match=r"pip install 'niche\[ray\]'"):
        predict_file_ray(sparse_dir, ok, tmp_path / "o2.csv", progress=False)


def test_cli_engine_ray(sparse_dir: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from niche.cli import app

    csv_in, _ = _inputs(tmp_path, 200, seed=10)
    ref = _local(sparse_dir, csv_in, tmp_path / "local.csv", chunk_rows=2048)
    r = CliRunner().invoke(app, ["predict", str(sparse_dir), str(csv_in), "--out", str(tmp_path / "ray.csv"),
                                 "--engine", "ray", "--num-workers", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "200 rows" in r.output and "Ray cluster" in r.output
    assert (tmp_path / "ray.csv").read_bytes() == ref.read_bytes()
    r = CliRunner().invoke(app, ["predict", str(sparse_dir), str(csv_in), "--out", str(tmp_path / "x.csv"),
                                 "--engine", "spark"])
    assert r.exit_code != 0 and "--engine" in r.output
