"""Bad data files (issue 18, item 7): each is read correctly or refused with a DataError that names
the file, the line where there is one, and the fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from niche import DataError
from niche import data as niche_data
from niche.data import read_labeled, read_texts


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# -- encodings -----------------------------------------------------------------------------------

@pytest.mark.parametrize("encoding", ["gbk", "gb18030"])
def test_chinese_legacy_encoding_is_named_with_the_iconv_fix(tmp_path: Path, encoding: str) -> None:
    p = write(tmp_path / "zh.csv", "text,label\n很好的电影，推荐！,pos\n".encode(encoding))
    with pytest.raises(DataError) as e:
        read_labeled(p)
    msg = str(e.value)
    assert f"{p}: line 2: byte 11 is not valid UTF-8" in msg and "the file is not UTF-8" in msg
    assert "looks like GBK/GB18030" in msg and "`iconv -f GB18030 -t UTF-8 zh.csv > zh.utf8.csv`" in msg


@pytest.mark.parametrize("text", ["café crème", "Müßiggang ist aller Laster Anfang", "naïve, déjà vu"])
def test_latin1_encoding_is_named_with_the_iconv_fix(tmp_path: Path, text: str) -> None:
    p = write(tmp_path / "fr.csv", f'text,label\nok,x\n"{text}",y\n'.encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_labeled(p)
    msg = str(e.value)
    assert f"{p}: line 3: byte" in msg and "not valid UTF-8" in msg
    assert "looks like Windows-1252/Latin-1" in msg and "iconv -f WINDOWS-1252 -t UTF-8 fr.csv > fr.utf8.csv" in msg


def test_utf16_with_bom_is_named(tmp_path: Path) -> None:
    p = write(tmp_path / "u.csv", "text,label\nhello,x\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"u\.csv: line 1: .*looks like UTF-16.*iconv -f UTF-16 -t UTF-8"):
        read_labeled(p)


def test_non_utf8_plain_text_file_names_the_line_too(tmp_path: Path) -> None:
    p = write(tmp_path / "corpus.txt", "一行\n".encode() + "二行\n".encode("gbk"))
    with pytest.raises(DataError, match=r"corpus\.txt: line 2: .*GBK/GB18030.*iconv -f GB18030"):
        read_texts(p)


@pytest.mark.parametrize("name, body", [
    ("t.csv", b"text,label\nok,x\nbad\x00text,y\n"),
    ("t.jsonl", b'{"text": "ok", "label": "x"}\n{"text": "bad\x00", "label": "y"}\n'),
    ("t.txt", b"ok\nbad\x00\n"),
])
def test_nul_byte_names_file_and_line(tmp_path: Path, name: str, body: bytes) -> None:
    p = write(tmp_path / name, body)
    with pytest.raises(DataError) as e:
        read_texts(p) if name.endswith(".txt") else read_labeled(p)
    msg = str(e.value)
    line = body.count(b"\n", 0, body.index(b"\x00")) + 1
    assert f"{p}: line {line}: NUL byte" in msg and "tr -d '\\000'" in msg


def test_utf16_without_bom_shows_as_nul_bytes_with_the_utf16_fix(tmp_path: Path) -> None:
    p = write(tmp_path / "w.csv", "text,label\nhello,x\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"w\.csv: line 1: NUL byte.*may be UTF-16.*iconv -f UTF-16 -t UTF-8"):
        read_labeled(p)


# -- line endings, BOM, quoting ------------------------------------------------------------------

def test_mixed_line_endings_read_correctly(tmp_path: Path) -> None:
    p = write(tmp_path / "m.csv", b'text,label\r\nalpha,x\nbeta,y\r\n"gam\r\nma",x\ndelta,y')
    d = read_labeled(p)
    assert d.texts == ["alpha", "beta", "gam\r\nma", "delta"] and d.labels == ["x", "y", "x", "y"]
    assert d.rows == [2, 3, 4, 6]
    j = write(tmp_path / "m.jsonl", b'{"text": "a", "label": "x"}\r\n{"text": "b", "label": "y"}\n')
    assert read_labeled(j).texts == ["a", "b"]
    t = write(tmp_path / "m.txt", b"one\r\ntwo\nthree")
    assert read_texts(t) == ["one", "two", "three"]


@pytest.mark.parametrize("name, body", [
    ("b.csv", b"text,label\nhi,x\n"),
    ("q.csv", b'"text","label"\n"hi","x"\n'),
    ("b.tsv", b"text\tlabel\nhi\tx\n"),
    ("b.jsonl", b'{"text": "hi", "label": "x"}\n'),
])
def test_utf8_bom_is_not_part_of_the_first_column(tmp_path: Path, name: str, body: bytes) -> None:
    p = write(tmp_path / name, b"\xef\xbb\xbf" + body)
    d = read_labeled(p)
    assert d.texts == ["hi"] and d.labels == ["x"]
    assert read_texts(p) == ["hi"]
    assert read_texts(write(tmp_path / "b.txt", b"\xef\xbb\xbfhi\nthere\n")) == ["hi", "there"]


def test_quoted_newlines_are_one_text_and_later_lines_keep_their_numbers(tmp_path: Path) -> None:
    p = write(tmp_path / "q.csv", b'text,label\n"first line\nsecond, line\n\nthird",x\nnext,y\n,z\n')
    with pytest.raises(DataError, match=r"q\.csv: line 7, column 'text': the text is empty"):
        read_labeled(p)
    d = read_labeled(p, skip_empty=True)
    assert d.texts == ["first line\nsecond, line\n\nthird", "next"] and d.rows == [2, 6]


# -- very long lines -----------------------------------------------------------------------------

def test_line_over_the_limit_is_refused_with_the_limit_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(niche_data, "MAX_LINE_CHARS", 1000)
    p = write(tmp_path / "long.csv", b"text,label\nok,x\n" + b"a" * 5000 + b",y\n")
    with pytest.raises(DataError, match=r"long\.csv: line 3 is longer than 1,000 characters.*no line breaks"):
        read_labeled(p)
    j = write(tmp_path / "long.jsonl", b'{"text": "' + b"a" * 5000 + b'", "label": "y"}\n')
    with pytest.raises(DataError, match=r"long\.jsonl: line 1 is longer than 1,000"):
        read_labeled(j)
    t = write(tmp_path / "long.txt", b"ok\n" + b"a" * 5000)
    with pytest.raises(DataError, match=r"long\.txt: line 2 is longer than 1,000"):
        read_texts(t)
    ok = write(tmp_path / "fits.csv", b"text,label\n" + b"a" * 998 + b",y\r\n" + b"b,x\r\n")  # exactly 1000
    d = read_labeled(ok)
    assert [len(t) for t in d.texts] == [998, 1] and d.rows == [2, 3]


def test_unclosed_quote_is_caught_at_the_field_limit(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(niche_data, "MAX_LINE_CHARS", 1000)
    body = b"text,label\nok,x\n\"never closed,y\n" + b"more text,x\n" * 200
    p = write(tmp_path / "quote.csv", body)
    with pytest.raises(DataError, match=r'quote\.csv: line 3: a field longer than 1,000 characters starts here; '
                                        r'usually a quote \(\"\) that opens a field and never closes'):
        read_labeled(p)


def test_200_mb_single_line_is_refused_in_bounded_memory(tmp_path: Path) -> None:
    """A real 200 MB line, written in 1 MB pieces; the reader runs in a fresh process whose peak
    memory is measured: it stops at MAX_LINE_CHARS (10 M characters) instead of holding the line."""
    p = tmp_path / "huge.csv"
    with p.open("wb") as f:
        f.write(b"text,label\n")
        piece = b"word " * (1 << 18)  # 1.25 MB
        for _ in range(160):
            f.write(piece)
        f.write(b",x\n")
    assert p.stat().st_size > 200_000_000
    code = (
        "import resource, sys\n"
        "from niche.data import read_labeled\n"
        "from niche.errors import DataError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n"
        "    read_labeled(sys.argv[1])\n"
        "except DataError as e:\n"
        "    print('ERROR', e)\n"
        "print('GROWTH_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run([sys.executable, "-c", code, str(p)], capture_output=True, text=True, timeout=120).stdout
    assert "line 2 is longer than 10,000,000 characters" in out, out
    growth_mb = int(out.split("GROWTH_KB")[1]) / 1024
    assert growth_mb < 120, f"reading grew the peak memory by {growth_mb:.0f} MB"


def test_long_text_under_the_limit_reads(tmp_path: Path) -> None:
    text = "word " * 400_000  # 2 M characters
    p = tmp_path / "big.jsonl"
    p.write_text(json.dumps({"text": text, "label": "x"}) + "\n", encoding="utf-8")
    assert read_labeled(p).texts == [text]


# -- column types --------------------------------------------------------------------------------

@pytest.mark.parametrize("values, typename", [
    ([1, 2, 3], "int64"),
    ([["a", "b"], ["c"], []], "list<element: string>"),
    ([1.5, 2.5, 3.5], "double"),
])
def test_parquet_text_column_that_is_not_strings(tmp_path: Path, values, typename: str) -> None:
    import pandas as pd

    p = tmp_path / "t.parquet"
    pd.DataFrame({"text": values, "label": ["x", "y", "x"]}).to_parquet(p)
    for read in (read_labeled, read_texts):
        with pytest.raises(DataError) as e:
            read(p)
        msg = str(e.value)
        assert f"{p}: column 'text' has type {typename}, expected strings" in msg
        assert "--text-col" in msg and "astype(str)" in msg


def test_parquet_dictionary_string_column_reads(tmp_path: Path) -> None:
    import pandas as pd

    p = tmp_path / "c.parquet"
    pd.DataFrame({"text": pd.Categorical(["a", "b", "a"]), "label": ["x", "y", "x"]}).to_parquet(p)
    assert read_labeled(p).texts == ["a", "b", "a"]


def test_jsonl_text_that_is_a_list_or_object(tmp_path: Path) -> None:
    p = write(tmp_path / "l.jsonl", b'{"text": "ok", "label": "x"}\n{"text": ["a", "b"], "label": "y"}\n')
    with pytest.raises(DataError, match=r"l\.jsonl: line 2, column 'text': expected a string, found list.*--text-col"):
        read_labeled(p)
    q = write(tmp_path / "o.jsonl", b'{"text": {"title": "t"}, "label": "y"}\n')
    with pytest.raises(DataError, match=r"o\.jsonl: line 1, column 'text': expected a string, found dict"):
        read_labeled(q)


# -- batch prediction reads the same way ---------------------------------------------------------

@pytest.fixture(scope="module")
def sparse_model():
    from niche import TextClassifier

    from ..conftest import toy_texts

    return TextClassifier("sparse").fit(*toy_texts(40))


@pytest.mark.parametrize("values, typename", [([1, 2, 3], "int64"), ([["a"], ["b"], []], "list<element: string>")])
def test_predict_refuses_a_parquet_text_column_that_is_not_strings(sparse_model, tmp_path: Path, values,
                                                                   typename: str) -> None:
    """`niche predict` checks the column type before it touches --out (it used to score str(123))."""
    import pandas as pd

    from niche.predict import predict_file

    p = tmp_path / "t.parquet"
    pd.DataFrame({"text": values, "id": [1, 2, 3]}).to_parquet(p)
    out = tmp_path / "scored.csv"
    with pytest.raises(DataError) as e:
        predict_file(sparse_model, p, out, progress=False)
    assert f"{p}: column 'text' has type {typename}, expected strings" in str(e.value) and "--text-col" in str(e.value)
    assert not out.exists() and not out.with_name(out.name + ".progress.json").exists()


def test_predict_refuses_a_jsonl_text_that_is_a_list(sparse_model, tmp_path: Path) -> None:
    from niche.predict import predict_file

    p = write(tmp_path / "l.jsonl", b'{"text": "ok"}\n{"text": ["a", "b"]}\n')
    with pytest.raises(DataError, match=r"l\.jsonl: line 2, column 'text': expected a string, found list.*--text-col"):
        predict_file(sparse_model, p, tmp_path / "o.jsonl", progress=False)
