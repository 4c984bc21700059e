"""Hostile and broken model directories (issue 18, item 6): each is refused with a clear
ModelLoadError from the Python API and a message without traceback (exit 2) from `niche predict`.

Rules the tests pin down: weights are read from safetensors only, never from pickles (a pickle whose
``__reduce__`` would create a marker file is placed where a careless loader would open it, and the
marker never appears); a symbolic link inside a model directory whose target lies outside the
directory is refused, not followed (the directory itself may be a link, and links between its own files
are fine); the tokenizer must fit the embedding matrix.
"""

from __future__ import annotations

import json
import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from niche import ModelLoadError, TextClassifier
from niche.cli import app

FAMILIES = ["sparse", "transformer"]
WEIGHTS = {"sparse": "sparse.safetensors", "transformer": "model.safetensors"}


def refused(d: Path, *patterns: str) -> str:
    """Assert that both the API and the CLI refuse ``d`` with a message matching every pattern."""
    with pytest.raises(ModelLoadError) as e:
        TextClassifier.load(d)
    msg = str(e.value)
    for p in patterns:
        assert re.search(p, msg, re.I), f"{p!r} not in {msg!r}"
    r = CliRunner().invoke(app, ["predict", str(d), "--text", "x"])
    out = " ".join((r.stdout + r.stderr).split())
    assert r.exit_code == 2, out
    assert "Traceback" not in out and re.search(patterns[0], out, re.I), out
    return msg


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    path.write_text(json.dumps(change(obj)), encoding="utf-8")


class Bomb:
    """Unpickling this creates the file ``marker``: proof that a loader unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def plant_bomb(path: Path, marker: Path) -> None:
    path.write_bytes(pickle.dumps(Bomb(marker)))


def test_the_bomb_is_live(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    plant_bomb(tmp_path / "b.pkl", marker)
    pickle.loads((tmp_path / "b.pkl").read_bytes())
    assert marker.exists()  # so its absence below means "never unpickled"


# -- weights -------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_missing_weights(copy_of, family: str) -> None:
    d = copy_of(family)
    (d / WEIGHTS[family]).unlink()
    refused(d, re.escape(WEIGHTS[family]), r"(missing|no) ", r"(Retrain|Re-save)")


def test_missing_sparse_vocab(copy_of) -> None:
    d = copy_of("sparse")
    (d / "sparse_vocab.json").unlink()
    refused(d, r"missing sparse_vocab\.json", "retrain")


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("keep", [0.5, 5, 0])
def test_truncated_weights(copy_of, family: str, keep: float) -> None:
    d = copy_of(family)
    w = d / WEIGHTS[family]
    data = w.read_bytes()
    w.write_bytes(data[: int(len(data) * keep)] if keep < 1 else data[:keep])
    refused(d, re.escape(str(w)) + r": not a complete safetensors file", r"truncated or damaged", r"[Rr]etrain")


@pytest.mark.parametrize("family", FAMILIES)
def test_weights_that_are_a_pickle_are_not_unpickled(copy_of, family: str, tmp_path: Path) -> None:
    d = copy_of(family)
    marker = tmp_path / "PWNED"
    plant_bomb(d / WEIGHTS[family], marker)
    refused(d, r"not a complete safetensors file")
    assert not marker.exists()


def test_pytorch_model_bin_instead_of_safetensors_is_never_unpickled(copy_of, tmp_path: Path) -> None:
    d = copy_of("transformer")
    marker = tmp_path / "PWNED"
    (d / "model.safetensors").unlink()
    plant_bomb(d / "pytorch_model.bin", marker)
    plant_bomb(d / "training_args.bin", marker)
    refused(d, r"no model\.safetensors", r"pytorch_model\.bin", r"never opens")
    assert not marker.exists()


@pytest.mark.parametrize("family", FAMILIES)
def test_pickles_beside_a_good_model_are_ignored(copy_of, family: str, tmp_path: Path) -> None:
    d = copy_of(family)
    marker = tmp_path / "PWNED"
    for name in ("model.pkl", "pytorch_model.bin", "optimizer.pt", "sparse.pkl", "tokenizer.pkl"):
        plant_bomb(d / name, marker)
    assert TextClassifier.load(d).predict(["good movie"])[0] in ("pos", "neg")
    assert not marker.exists()


def test_sparse_files_that_do_not_belong_together(copy_of) -> None:
    d = copy_of("sparse")
    edit_json(d / "sparse_vocab.json", lambda v: v | {"vectorizers": [x | {"terms": x["terms"][:5]}
                                                                         for x in v["vectorizers"]]})
    refused(d, r"do not belong together", r"retrain")
    d = copy_of("sparse", "m2")
    (d / "sparse_vocab.json").write_text("{not json", encoding="utf-8")
    refused(d, r"sparse_vocab\.json and sparse\.safetensors are damaged", r"corrupt JSON")
    d = copy_of("sparse", "m3")
    edit_json(d / "sparse_vocab.json", lambda v: v | {"n_classes": 3})
    refused(d, r"(do not belong together|3 classes)")


# -- niche.json ----------------------------------------------------------------------------------

NICHE_JSON = [
    ("bad json", lambda p: p.write_text('{"family": "sparse",', encoding="utf-8"), r"corrupt JSON"),
    ("not utf-8", lambda p: p.write_bytes(b'{"family": "\xff"}'), r"corrupt JSON"),
    ("a list", lambda p: p.write_text("[1, 2]", encoding="utf-8"), r"expected a JSON object, found list"),
    ("newer version", lambda p: edit_json(p, lambda o: o | {"format_version": 99}),
     r"format_version 99 is newer.*pip install -U niche"),
    ("version a string", lambda p: edit_json(p, lambda o: o | {"format_version": "1"}),
     r"format_version must be a positive integer, found '1'"),
    ("family a number", lambda p: edit_json(p, lambda o: o | {"family": 3}), r"'family' is missing or not a string"),
    ("labels a string", lambda p: edit_json(p, lambda o: o | {"labels": "pos,neg"}),
     r"'labels' is missing or not a list"),
    ("labels empty", lambda p: edit_json(p, lambda o: o | {"labels": []}), r"non-empty list of distinct strings"),
    ("labels repeated", lambda p: edit_json(p, lambda o: o | {"labels": ["pos", "pos"]}), r"distinct strings"),
    ("config a list", lambda p: edit_json(p, lambda o: o | {"config": [1]}), r"'config' is missing or not a JSON object"),
    ("unknown family", lambda p: edit_json(p, lambda o: o | {"family": "quantum"}), r"names family 'quantum'"),
]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("case, damage, message", NICHE_JSON, ids=[c[0] for c in NICHE_JSON])
def test_damaged_niche_json(copy_of, family: str, case: str, damage, message: str) -> None:
    d = copy_of(family)
    damage(d / "niche.json")
    refused(d, r"niche\.json", message)


# -- symbolic links ------------------------------------------------------------------------------

@pytest.mark.parametrize("family", FAMILIES)
def test_link_out_of_the_directory_is_refused(copy_of, family: str, tmp_path: Path) -> None:
    d = copy_of(family)
    w = d / WEIGHTS[family]
    w.unlink()
    w.symlink_to("/etc/passwd")
    refused(d, rf"{WEIGHTS[family]} is a symbolic link to /etc/passwd, outside the model directory",
            r"does not follow links", r"Copy the file")


@pytest.mark.parametrize("family", FAMILIES)
def test_link_to_good_weights_elsewhere_is_refused_too(copy_of, good_dirs, family: str) -> None:
    d = copy_of(family)
    (d / WEIGHTS[family]).unlink()
    (d / WEIGHTS[family]).symlink_to(good_dirs[family] / WEIGHTS[family])  # valid weights, but not in the dir
    refused(d, r"is a symbolic link to .*outside the model directory")
    d = copy_of(family, "m2")
    (d / "niche.json").unlink()
    (d / "niche.json").symlink_to(good_dirs[family] / "niche.json")
    refused(d, r"niche\.json is a symbolic link")


def test_link_to_a_folder_outside_is_refused(copy_of, tmp_path: Path) -> None:
    d = copy_of("sparse")
    (tmp_path / "elsewhere").mkdir()
    (d / "extra").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    refused(d, r"extra is a symbolic link")


@pytest.mark.parametrize("family", FAMILIES)
def test_links_inside_the_directory_and_a_linked_directory_load(copy_of, family: str, tmp_path: Path) -> None:
    d = copy_of(family)
    w = d / WEIGHTS[family]
    os.replace(w, d / "weights.bin.safetensors")
    w.symlink_to("weights.bin.safetensors")  # a relative link to a file of the same directory
    live = tmp_path / "live"
    live.symlink_to(d, target_is_directory=True)  # `models/live -> models/v3`
    assert TextClassifier.load(live).predict(["good"])[0] in ("pos", "neg")


# -- tokenizer / config that do not fit the weights ----------------------------------------------

def test_tokenizer_with_ids_beyond_the_embeddings(copy_of) -> None:
    d = copy_of("transformer")

    def grow(tj):
        vocab = tj["model"]["vocab"]
        n = len(vocab)
        vocab |= {f"zz{i}": n + i for i in range(300)}
        return tj

    edit_json(d / "tokenizer.json", grow)
    refused(d, r"tokenizer has token ids up to \d+ but the model's embedding matrix has \d+ rows",
            r"do not belong to this model")


def test_tokenizer_much_smaller_than_the_embeddings(copy_of) -> None:
    d = copy_of("transformer")
    edit_json(d / "tokenizer.json", lambda tj: tj | {"model": tj["model"] | {
        "vocab": {t: i for t, i in tj["model"]["vocab"].items() if i < 10}}})
    refused(d, r"the tokenizer has \d+ tokens but the model's embedding matrix has \d+ rows")


def test_config_vocab_size_that_does_not_match_the_weights(copy_of) -> None:
    d = copy_of("transformer")
    edit_json(d / "config.json", lambda c: c | {"vocab_size": c["vocab_size"] + 7})
    refused(d, r"cannot load the transformer model", r"must come from the same model")


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_tokenizer_missing_or_corrupt(copy_of, damage: str) -> None:
    d = copy_of("transformer")
    if damage == "missing":
        for f in ("tokenizer.json", "vocab.txt"):
            (d / f).unlink(missing_ok=True)
        refused(d, r"no tokenizer files", r"Restore the tokenizer")
    else:
        (d / "tokenizer.json").write_text("{nope", encoding="utf-8")
        refused(d, r"cannot load the transformer model", r"tokenizer files must come from the same model")


def test_config_json_missing_or_corrupt(copy_of) -> None:
    d = copy_of("transformer")
    (d / "config.json").write_text("{nope", encoding="utf-8")
    refused(d, r"cannot load the transformer model")
    (d / "config.json").unlink()
    refused(d, r"cannot load the transformer model")


# -- the onnx runtime ----------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["missing", "truncated", "link out"])
def test_onnx_model_missing_truncated_or_linked_out(copy_of, damage: str) -> None:
    pytest.importorskip("onnxruntime")
    d = copy_of("transformer")
    edit_json(d / "niche.json", lambda o: o | {"runtime": "onnx"})
    (d / "model.safetensors").unlink()
    if damage == "missing":
        refused(d, r"there is no model\.onnx", r"Re-export")
    elif damage == "truncated":
        (d / "model.onnx").write_bytes(b"\x08\x07\x12\x04onnx" + b"\x00" * 10)
        refused(d, r"onnxruntime cannot load this model", r"Re-export")
    else:
        (d / "model.onnx").symlink_to("/etc/passwd")
        refused(d, r"model\.onnx is a symbolic link to /etc/passwd")


# -- niche serve ---------------------------------------------------------------------------------

def test_serve_refuses_to_start_with_a_bad_directory(copy_of) -> None:
    from fastapi.testclient import TestClient

    from niche.serving.app import create_app

    d = copy_of("sparse")
    (d / "sparse.safetensors").write_bytes(b"\x00" * 10)
    with pytest.raises(ModelLoadError, match=r"not a complete safetensors file"):
        with TestClient(create_app({"m": d})):
            pass
    link = copy_of("transformer", "linked")
    (link / "model.safetensors").unlink()
    (link / "model.safetensors").symlink_to("/etc/passwd")
    with pytest.raises(ModelLoadError, match=r"symbolic link to /etc/passwd"):
        with TestClient(create_app({"m": link})):
            pass


def test_failed_reload_keeps_the_old_model_serving(copy_of) -> None:
    """Not covered in tests/serving (its reload tests reload good directories)."""
    from fastapi.testclient import TestClient

    from niche.serving.app import create_app

    d = copy_of("sparse")
    with TestClient(create_app({"m": d})) as c:
        before = c.post("/v1/models/m/classify", json={"inputs": ["good"]}).json()
        (d / "sparse.safetensors").write_bytes(b"\x00" * 10)
        r = c.post("/v1/models/m/reload")
        assert r.status_code == 500 and r.json()["error_type"] == "model_failure", r.text
        assert "previous version keeps serving" in r.json()["error"] and "sparse.safetensors" in r.json()["error"]
        after = c.post("/v1/models/m/classify", json={"inputs": ["good"]})
        assert after.status_code == 200 and after.json() == before


def test_niche_serve_exits_nonzero_with_the_message(copy_of) -> None:
    from ..conftest import free_port

    d = copy_of("sparse")
    (d / "sparse.safetensors").write_bytes(b"xx")
    r = subprocess.run([sys.executable, "-m", "niche", "serve", str(d), "--port", str(free_port())],
                       capture_output=True, text=True, timeout=120)
    out = r.stdout + r.stderr
    assert r.returncode == 2 and "sparse.safetensors: not a complete safetensors file" in out, out
    assert "Traceback" not in out and "serving" not in r.stdout, out  # refused before the port opens


def test_ensemble_with_a_broken_or_linked_out_member(good_dirs, tmp_path: Path) -> None:
    import shutil

    from niche import build_ensemble
    from niche.data import LabeledData

    from ..conftest import toy_texts

    dev = LabeledData(*toy_texts(20, seed=5), source="dev")
    build_ensemble([good_dirs["sparse"], good_dirs["transformer"]], dev, steps=2).save(tmp_path / "ens")
    d = tmp_path / "broken"
    shutil.copytree(tmp_path / "ens", d, symlinks=True)
    (d / "members" / "0" / "sparse.safetensors").write_bytes(b"\0" * 8)
    refused(d, r"members/0/sparse\.safetensors: not a complete safetensors file")
    d = tmp_path / "linked"
    shutil.copytree(tmp_path / "ens", d, symlinks=True)
    shutil.rmtree(d / "members" / "1")
    (d / "members" / "1").symlink_to(good_dirs["transformer"], target_is_directory=True)
    refused(d, r"members/1 is a symbolic link to .*outside the model directory")


def test_remote_code_named_by_config_is_never_imported(copy_of, tmp_path: Path) -> None:
    """config.json/tokenizer_config.json ``auto_map`` entries point at a Python file in the directory;
    niche never passes trust_remote_code, so the file is not imported (the built-in class is used)."""
    d = copy_of("transformer")
    marker = tmp_path / "PWNED"
    (d / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\n"
                               "from transformers import BertConfig as C, BertForSequenceClassification as M\n")
    edit_json(d / "config.json", lambda c: c | {"auto_map": {"AutoConfig": "evil.C",
                                                             "AutoModelForSequenceClassification": "evil.M"}})
    edit_json(d / "tokenizer_config.json", lambda c: c | {"auto_map": {"AutoTokenizer": ["evil.T", None]}})
    TextClassifier.load(d).predict(["good"])
    assert not marker.exists()
