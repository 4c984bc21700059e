"""Readers, validation errors (one test per bad input), splits and inspect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from niche.data import check_known_labels, check_trainable, read_labeled, stratified_split
from niche.inspection import inspect
from niche.errors import DataError

from .conftest import toy_texts, write_csv


def test_reads_all_formats_identically(tmp_path: Path) -> None:
    import pandas as pd

    texts, labels = toy_texts(30)
    texts[3] = 'has, a comma and "quotes"\nand a newline'
    df = pd.DataFrame({"review": texts, "y": labels})
    df.to_csv(tmp_path / "a.csv", index=False)
    df.to_csv(tmp_path / "a.tsv", index=False, sep="\t")
    df.to_json(tmp_path / "a.jsonl", orient="records", lines=True, force_ascii=False)
    df.to_parquet(tmp_path / "a.parquet")
    for name in ("a.csv", "a.tsv", "a.jsonl", "a.parquet"):
        d = read_labeled(tmp_path / name, text_col="review", label_col="y")
        assert d.texts == texts and d.labels == labels, name


def test_numeric_labels_become_strings(tmp_path: Path) -> None:
    p = tmp_path / "n.jsonl"
    p.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 0}\n')
    assert read_labeled(p).labels == ["1", "0"]


def test_missing_file(tmp_path: Path) -> None:
    write_csv(tmp_path / "train.csv", [("a", "x")])
    with pytest.raises(DataError, match=r"trian\.csv: file not found.*train\.csv"):
        read_labeled(tmp_path / "trian.csv")


def test_missing_column_lists_columns(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "t.csv", [("a", "x")], header=("review", "label"))
    with pytest.raises(DataError, match=r"column 'text' not found; columns are: review, label.*--text-col"):
        read_labeled(p)
    with pytest.raises(DataError, match=r"column 'sentiment' not found.*--label-col"):
        read_labeled(p, text_col="review", label_col="sentiment")


def test_empty_text_errors_or_skips(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "t.csv", [("a b", "x"), ("   ", "y"), ("c", "y")])
    with pytest.raises(DataError, match=r"t\.csv: line 3, column 'text': the text is empty.*--skip-empty"):
        read_labeled(p)
    d = read_labeled(p, skip_empty=True)
    assert d.texts == ["a b", "c"] and d.skipped == 1


def test_empty_and_nan_labels(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "t.csv", [("a", "x"), ("b", "")])
    with pytest.raises(DataError, match=r"line 3, column 'label': the label is empty"):
        read_labeled(p)
    import pandas as pd

    pd.DataFrame({"text": ["a", "b"], "label": [1.0, float("nan")]}).to_parquet(tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t\.parquet: row 2, column 'label': the label is empty or missing"):
        read_labeled(tmp_path / "t.parquet")


def test_only_one_class(tmp_path: Path) -> None:
    d = read_labeled(write_csv(tmp_path / "t.csv", [("a", "x"), ("b", "x")]))
    with pytest.raises(DataError, match=r"only one class \('x'\).*at least two"):
        check_trainable(d)


def test_non_utf8_names_line(tmp_path: Path) -> None:
    p = tmp_path / "gbk.csv"
    p.write_bytes("text,label\nok,x\n".encode() + "很好,y\n".encode("gbk"))
    with pytest.raises(DataError, match=r"gbk\.csv: line 3: byte \d+ is not valid UTF-8.*iconv"):
        read_labeled(p)


def test_eval_label_never_seen(tmp_path: Path) -> None:
    ev = read_labeled(write_csv(tmp_path / "dev.csv", [("a", "x"), ("b", "zzz")]))
    with pytest.raises(DataError, match=r"dev\.csv: line/row 3: label 'zzz' was never seen in training"):
        check_known_labels(ev, ["x", "y"])


def test_malformed_jsonl_and_wrong_field_count(tmp_path: Path) -> None:
    p = tmp_path / "t.jsonl"
    p.write_text('{"text": "a", "label": "x"}\n{"text": "b", label\n')
    with pytest.raises(DataError, match=r"t\.jsonl: line 2: invalid JSON"):
        read_labeled(p)
    q = tmp_path / "t.csv"
    q.write_text("text,label\na,x\nb,y,extra\n")
    with pytest.raises(DataError, match=r"line 3: expected 2 fields"):
        read_labeled(q)


def test_unsupported_extension(tmp_path: Path) -> None:
    p = tmp_path / "t.xlsx"
    p.write_text("x")
    with pytest.raises(DataError, match=r"unsupported file extension '.xlsx'"):
        read_labeled(p)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_stratified_split_is_seeded_and_stratified(seed: int) -> None:
    texts = [f"t{i}" for i in range(200)]
    labels = ["a"] * 150 + ["b"] * 45 + ["c"] * 4 + ["d"]
    from niche.data import LabeledData

    d = LabeledData(texts, labels, "mem", list(range(200)))
    tr, dv = stratified_split(d, 0.2, seed=seed)
    tr2, dv2 = stratified_split(d, 0.2, seed=seed)
    assert dv.texts == dv2.texts
    assert sorted(tr.texts + dv.texts) == sorted(texts) and not set(tr.texts) & set(dv.texts)
    assert dv.labels.count("a") == 30 and dv.labels.count("b") == 9 and dv.labels.count("c") == 1
    assert "d" in tr.labels and "d" not in dv.labels  # a singleton class stays in train


def test_inspect_reports_duplicates_overlap_and_imbalance(tmp_path: Path) -> None:
    rows = [("same text", "a")] * 3 + [(f"a{i}", "a") for i in range(40)] + [("b0", "b"), ("b1", "b")]
    tr = write_csv(tmp_path / "tr.csv", rows)
    ev = write_csv(tmp_path / "ev.csv", [("same text", "a"), ("new", "c")])
    rep = inspect(tr, ev)
    assert rep.rows == 45 and rep.class_counts == {"a": 43, "b": 2}
    assert rep.duplicate_texts == 2 and rep.overlap_texts == 1 and rep.eval_unseen_labels == ["c"]
    assert any("imbalance" in w for w in rep.warnings)
    assert rep.chars["p100"] == len("same text")
    json.dumps(rep.to_dict())
