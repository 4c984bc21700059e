"""Compression: ONNX/int8 parity, distillation students, and the guard (refusals included)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from niche import TextClassifier
from niche.compress import CompressionRefused, GuardConfig, export, guarded, judge, write_onnx
from niche.data import LabeledData
from niche.compress import DistillConfig, distill, layer_spread, parse_student
from niche.errors import ConfigError

from tests.conftest import TINY, toy_texts

pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'niche[onnx]')")

NO_SPEED = dict(require_faster=False, rounds=1, speed_texts=40, latency_texts=5)


def labeled(n: int, seed: int, name: str) -> LabeledData:
    t, y = toy_texts(n, seed=seed)
    return LabeledData(t, y, name, list(range(2, n + 2)))


@pytest.fixture(scope="module")
def teacher_dir(tiny_bert: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    tr, dv = labeled(160, 1, "train.csv"), labeled(40, 2, "dev.csv")
    d = tmp_path_factory.mktemp("teacher") / "teacher"
    TextClassifier("transformer", base=str(tiny_bert), **TINY).fit(tr, eval_data=dv).save(d)
    return d


def tree_hash(d: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(d.rglob("*")):
        if f.is_file():
            h.update(f.relative_to(d).as_posix().encode())
            h.update(f.read_bytes())
    return h.hexdigest()


def test_onnx_fp32_matches_pytorch_and_int8_stays_close(teacher_dir: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    src = TextClassifier.load(teacher_dir)
    texts = toy_texts(120, seed=7)[0] + ["good " * 40, "bad", "the the the"]  # padding and truncation
    ref = src.predict_proba(texts)
    for int8, fuse in ((False, True), (True, True), (False, False)):
        d = tmp_path / f"int8-{int8}-fuse-{fuse}"
        d.mkdir()
        write_onnx(src, d, int8=int8, calibration=texts[:60], fuse=fuse)
        res = TextClassifier.load(d)
        assert res.info_["runtime"] == "onnx" and res.info_["precision"] == ("int8" if int8 else "fp32")
        fusion = res.info_["onnx"]["fusion"]
        assert fusion["fused"] is fuse
        if fuse:  # every layer but the [CLS]-only last one becomes one of onnxruntime's fused attention kernels
            op = "MultiHeadAttention" if int8 else "Attention"  # int8 keeps Q/K/V projections as MatMuls
            assert fusion["operators"][op] == src.model_.model.config.num_hidden_layers - 1
        got = res.predict_proba(texts)
        assert got.shape == ref.shape and np.allclose(got.sum(1), 1, atol=1e-5)
        if int8:
            assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95 and np.abs(got - ref).max() < 0.2
            q = res.info_["onnx"]["quantization"]
            assert q["calibration_texts"] == 60 and q["tried"] and q["level"] in [t["level"] for t in q["tried"]]
            assert q["tried"][0]["level"] == "all MatMuls int8"  # the fastest candidate is tried first
        else:
            np.testing.assert_allclose(got, ref, atol=1e-5)
            assert res.predict(texts) == src.predict(texts)
        # a plain onnxruntime session runs the file with the documented inputs/outputs
        sess = ort.InferenceSession(str(d / "model.onnx"), providers=["CPUExecutionProvider"])
        assert [i.name for i in sess.get_inputs()] == ["input_ids", "attention_mask"]
        assert [o.name for o in sess.get_outputs()] == ["logits"]


def test_int8_without_calibration_is_blockwise_and_close(teacher_dir: Path, tmp_path: Path) -> None:
    import onnx

    src = TextClassifier.load(teacher_dir)
    texts = toy_texts(80, seed=9)[0]
    write_onnx(src, tmp_path, int8=True)
    q = TextClassifier.load(tmp_path).info_["onnx"]["quantization"]
    assert q["level"] == "blockwise int8, block 32" and q["block_size"] == 32 and "MatMulNBits" in q["method"]
    ops = {n.op_type for n in onnx.load(str(tmp_path / "model.onnx")).graph.node}
    assert "MatMulNBits" in ops and "MatMulInteger" not in ops
    ref, got = src.predict_proba(texts), TextClassifier.load(tmp_path).predict_proba(texts)
    assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.95 and np.abs(got - ref).max() < 0.1


def test_unpadded_batches_run_the_mask_free_graph(teacher_dir: Path, tmp_path: Path) -> None:
    import onnx

    from niche.families.onnx import make_session, mask_free_graph

    src = TextClassifier.load(teacher_dir)
    write_onnx(src, tmp_path, int8=True)  # int8 graphs fuse attention as MultiHeadAttention
    dense = onnx.load_from_string(mask_free_graph(tmp_path / "model.onnx"))
    mha = [n for n in dense.graph.node if n.op_type == "MultiHeadAttention"]
    assert mha and all(len(n.input) < 5 or not n.input[4] for n in mha)
    res = TextClassifier.load(tmp_path)
    tm = res.model_
    pool = toy_texts(200, seed=11)[0]
    lens = [len(x) for x in tm.encode(pool)]
    common = max(set(lens), key=lens.count)
    same = [t for t, n in zip(pool, lens) if n == common][:4]  # one token length: no padding
    assert len(same) == 4
    masked = tm.session.run(["logits"], {"input_ids": np.array(tm.encode(same)),
                                         "attention_mask": np.ones((4, len(tm.encode(same)[0])), dtype=np.int64)})[0]
    got = tm.logits_for_ids(tm.encode(same))
    assert tm._dense is not None  # the batch without padding ran the mask-free session
    assert np.abs(got - masked).max() < 1e-2 and (got.argmax(1) == masked.argmax(1)).all()
    mixed = same + ["good " * 30]  # padded batch: the masked session, same labels as the source
    assert res.predict(mixed) == src.predict(mixed)
    fp32 = tmp_path / "fp32"
    fp32.mkdir()
    write_onnx(src, fp32)  # packed Attention has no mask-free kernel: no twin graph
    assert mask_free_graph(fp32 / "model.onnx") is None
    tm.spin = "always"  # onnxruntime's own default, rebuilt on request; same results
    tm.set_threads(1)
    assert tm._dense is None and np.abs(tm.logits_for_ids(tm.encode(same)) - got).max() < 1e-2
    with pytest.raises(ValueError, match="spin must be one of"):
        make_session(tmp_path / "model.onnx", spin="sometimes")


def test_export_ships_with_report_and_parity(teacher_dir: Path, tmp_path: Path) -> None:
    before = tree_hash(teacher_dir)
    out = tmp_path / "onnx"
    rep = export(teacher_dir, out, labeled(40, 2, "dev.csv"), guard=GuardConfig(**NO_SPEED))
    assert rep["verdict"]["passed"] and rep["parity"]["label_agreement"] == 1.0
    assert rep["parity"]["max_abs_prob_diff"] < 1e-4
    for f in ("compression_report.md", "compression_report.json", "compression_report.png", "model.onnx", "niche.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "compression_report.json").read_text())
    assert set(saved["models"]) == {"source", "onnx-fp32"}
    for row in saved["models"].values():
        assert {"accuracy", "macro_f1", "docs_per_s", "p50_ms", "size_mb"} <= set(row)
    assert json.loads((out / "niche.json").read_text())["compression"]["parity"]["label_agreement"] == 1.0
    assert tree_hash(teacher_dir) == before  # the source is untouched


def test_guard_refuses_a_broken_result_and_writes_nothing(teacher_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "student"
    out.mkdir()
    (out / "keep.txt").write_text("previous version")
    before = tree_hash(teacher_dir)

    def broken(d: Path) -> None:  # a 'student' that learned the labels backwards
        tr = labeled(160, 1, "train.csv")
        flipped = ["pos" if y == "neg" else "neg" for y in tr.labels]
        clf = TextClassifier("sparse").fit(tr.texts, flipped, eval_data=(tr.texts[:20], flipped[:20]))
        clf.model_.save(d)
        (d / "niche.json").write_text(json.dumps(clf.info_))

    with pytest.raises(CompressionRefused, match=r"NOT written.*accuracy drops .* more than --max-drop 1.0"):
        guarded(teacher_dir, out, labeled(40, 2, "dev.csv"), broken, "distill --student broken", GuardConfig(**NO_SPEED))
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"] and (out / "keep.txt").read_text() == "previous version"
    assert tree_hash(teacher_dir) == before
    refused = json.loads((tmp_path / "student.refused" / "compression_report.json").read_text())
    assert not refused["verdict"]["passed"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".student.tmp")]  # no temp dirs left behind


def test_judge_refuses_slower_and_disagreeing_results() -> None:
    rows = {"source": {"accuracy": 0.9, "docs_per_s": 100.0}, "r": {"accuracy": 0.895, "docs_per_s": 90.0}}
    cfg = GuardConfig()
    reasons = judge(rows, "source", "r", cfg, {"label_agreement": 0.99, "max_abs_prob_diff": 0.3})
    assert any("not faster" in r for r in reasons) and any("parity check failed" in r for r in reasons)
    rows["r"]["docs_per_s"] = 150.0
    assert judge(rows, "source", "r", cfg, {"label_agreement": 0.999, "max_abs_prob_diff": 0.01}) == []
    assert judge(rows, "source", "r", GuardConfig(max_drop=0.4), None)[0].startswith("accuracy drops 0.50 points")


def test_int8_fallback_levels_grow_from_all_int8() -> None:
    from niche.compress.int8 import int8_levels

    names = ["/bert/encoder/layer.0/attention/self/query/MatMul", "/bert/encoder/layer.0/output/dense/MatMul",
             "/bert/encoder/layer.0/attention/output/dense/MatMul", "/bert/encoder/layer.1/output/dense/MatMul",
             "/query/MatMul", "/classifier/Gemm"]
    levels = int8_levels(names)
    assert levels[0] == ("all MatMuls int8", [])
    assert levels[1][1] == ["/classifier/Gemm", "/query/MatMul"]
    assert set(levels[2][1]) == set(levels[1][1]) | {names[1], names[3]}  # FFN outputs, not attention outputs
    assert set(levels[3][1]) == set(levels[2][1]) | {names[0], names[2]}
    assert all(set(a[1]) < set(b[1]) for a, b in zip(levels, levels[1:]))


def test_layer_spread_and_student_spec() -> None:
    assert layer_spread(12, 6) == [0, 2, 4, 7, 9, 11]  # DistilBERT's choice
    assert layer_spread(6, 3) == [0, 3, 5] and layer_spread(2, 1) == [1]
    with pytest.raises(ConfigError, match="K must be 1..5"):
        layer_spread(6, 6)
    assert parse_student("layers:3") == ("layers", 3) and parse_student("sparse") == ("sparse", None)
    assert parse_student("static") == ("static", None)
    assert parse_student("static:linear") == ("static", "linear") and parse_student("static:cnn") == ("static", "cnn")
    with pytest.raises(ConfigError, match="layers:K"):
        parse_student("layers3")
    with pytest.raises(ConfigError, match="one of linear, mlp, cnn, e.g. static:cnn"):
        parse_student("static:conv")


@pytest.mark.parametrize("student", ["layers:1", "sparse", "static", "static:linear"])
def test_distilled_student_learns_the_teachers_labels(teacher_dir: Path, tmp_path: Path, student: str) -> None:
    teacher = TextClassifier.load(teacher_dir)
    unlabeled = toy_texts(200, seed=9)[0]
    out = tmp_path / "student"
    params = {k: v for k, v in TINY.items() if k not in ("max_len",)}
    if student.startswith("static"):  # its own settings: a head on distilled token vectors
        params = {"epochs": 40, "patience": 40}
    rep = distill(teacher_dir, labeled(60, 1, "train.csv"), labeled(40, 2, "dev.csv"), out,
                  DistillConfig(student, alpha=0.7, temperature=2.0), unlabeled=unlabeled, params=params,
                  guard=GuardConfig(max_drop=5.0, **NO_SPEED))
    assert rep["verdict"]["passed"]
    st = TextClassifier.load(out)
    test = toy_texts(100, seed=12)[0]
    agree = np.mean(np.array(st.predict(test)) == np.array(teacher.predict(test)))
    assert agree >= 0.9, agree
    info = st.info_["training"]["distillation"]
    assert info["transfer_texts"] == 200 and info["student"] == student
    if student.startswith("layers"):
        assert st.model_.model.config.num_hidden_layers == 1 and info["teacher_layers_kept"] == [1]
    if student.startswith("static"):  # the head: cnn unless the spec names another
        assert st.info_["config"]["head"] == ("linear" if student == "static:linear" else "cnn")
    # teacher soft labels were cached for a rerun
    assert list((tmp_path / "student.distill-cache").glob("teacher-logits-*.safetensors"))


def test_static_student_of_an_ensemble_takes_its_transformer_members_vectors(teacher_dir: Path, tmp_path: Path) -> None:
    """auto's usual winner is an ensemble: the static student's token vectors come from its fine-tuned
    transformer member (the soft labels from the whole ensemble); without a transformer member, from the
    static family's default base."""
    from niche.compress.distill import encoder_of
    from niche.config import EnsembleConfig
    from niche.families import ensemble

    tr, dv = labeled(160, 1, "train.csv"), labeled(40, 2, "dev.csv")
    sparse = TextClassifier("sparse").fit(tr, eval_data=dv)
    tf = TextClassifier.load(teacher_dir)
    model, info = ensemble.build([(sparse.model_, sparse.info_, "sparse"), (tf.model_, tf.info_, "transformer")], dv,
                                 EnsembleConfig(steps=4))
    ens_dir = tmp_path / "ensemble"
    TextClassifier.from_model("ensemble", model, info["labels"], EnsembleConfig(steps=4), info).save(ens_dir)
    ens = TextClassifier.load(ens_dir)
    assert encoder_of(ens, ens_dir) == ens_dir / "members" / "1"
    assert encoder_of(tf, teacher_dir) == teacher_dir and encoder_of(sparse, tmp_path) is None
    out = tmp_path / "student"
    rep = distill(ens_dir, tr, dv, out, DistillConfig("static:linear", alpha=0.7), params={"epochs": 40, "patience": 40},
                  guard=GuardConfig(max_drop=100.0, **NO_SPEED))
    st = TextClassifier.load(out)
    assert st.info_["config"]["base"] == str(ens_dir / "members" / "1")
    assert st.info_["training"]["distillation"]["token_vectors_from"] == str(ens_dir / "members" / "1")
    assert rep["verdict"]["passed"]


def test_export_refuses_sparse_models(tmp_path: Path) -> None:
    tr = labeled(60, 1, "train.csv")
    d = tmp_path / "sp"
    TextClassifier("sparse").fit(tr).save(d)
    with pytest.raises(ConfigError, match="needs a PyTorch transformer model"):
        export(d, tmp_path / "x", labeled(20, 2, "dev.csv"))


def test_cli_distill_and_quantize(teacher_dir: Path, tmp_path: Path, toy_csv) -> None:
    """Through the CLI. The guard's speed criterion is live here, so either outcome of it is
    accepted, but each must be complete: shipped with its report, or refused with the reason and
    nothing written."""
    from ..cli.test_cli import niche

    train, dev = toy_csv
    texts = tmp_path / "unlabeled.txt"
    texts.write_text("\n".join(toy_texts(100, seed=21)[0]) + "\n")
    code, out = niche("distill", "--teacher", teacher_dir, "--data", train, "--eval", dev, "--student", "sparse",
                      "--unlabeled", texts, "--out", tmp_path / "sp", "--max-drop", "5", "-q")
    flat = " ".join(out.split())
    if code == 0:
        assert "passed the guard" in flat and (tmp_path / "sp" / "compression_report.md").is_file()
    else:
        assert code == 3 and "not faster" in flat and not (tmp_path / "sp").exists(), out
    code, out = niche("quantize", teacher_dir, "--out", tmp_path / "q", "--eval", dev)
    flat = " ".join(out.split())
    if code == 0:
        assert "parity: label agreement" in flat and (tmp_path / "q" / "model.onnx").is_file()
        assert TextClassifier.load(tmp_path / "q").info_["precision"] == "int8"
    else:
        assert code == 3 and "NOT written" in flat and not (tmp_path / "q").exists(), out
    code, out = niche("quantize", teacher_dir, "--out", tmp_path / "q2")
    assert code == 2 and "needs labeled dev data (--eval FILE)" in " ".join(out.split())
