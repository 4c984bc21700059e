"""Knowledge distillation: train a small, fast student on a fine-tuned teacher's soft labels.

Loss (transformer students): ``(1 - alpha) * CE(labels) + alpha * T^2 * KL(teacher_T || student_T)``
(Hinton et al. 2015). Unlabeled in-domain texts, when given, are extra transfer data: they carry
the teacher's soft labels only. Students:

- ``layers:K``: a K-layer copy of the teacher, its layers initialized from a spread of the
  teacher's (first and last kept, the rest evenly between — as DistilBERT does);
- ``sparse``: the sparse family fitted on the soft targets (so unlabeled text helps it too);
- ``static``: the static family (:mod:`niche.families.static`) with token vectors distilled from the
  teacher's own fine-tuned encoder (for an ensemble teacher, auto's usual winner, its transformer
  member's) and its head (``static:cnn``, the default; ``static:linear``, ``static:mlp``) trained on
  the soft targets;
- any base model name or directory: a smaller encoder fine-tuned on the soft targets.

The teacher's logits over the training + transfer texts are computed once and cached (safetensors)
under ``OUT.distill-cache/``, keyed by teacher weights, texts and max length. The result goes
through the guard of :mod:`niche.compress.guard` like every compress command.
"""

from __future__ import annotations

import copy
import hashlib
import re
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..train import distributed
from ..classifier import TextClassifier
from ..config import DistillConfig, GuardConfig, config_to_dict, parse_student
from ..data import LabeledData, check_known_labels, check_trainable
from ..errors import ConfigError
from ..families import FitTask, make_config, save_model
from ..families.sparse import SparseModel
from ..families.static import StaticModel
from ..families.transformer import TransformerModel, train_encoded
from ..train import Distillation, class_weights, fingerprint
from .guard import guarded

CACHE_SUFFIX = ".distill-cache"
STATIC_FIELDS = ("seed", "epochs", "lr", "batch_size", "patience", "threads")
"""Student settings a static student takes (the rest are the static family's defaults)."""
STATIC_STUDENT_HEAD = "cnn"
"""The static student's head unless ``--student static:HEAD`` names one. On SST-2 (benchmarks/peers.py,
BENCHMARKS.md) a mean of token vectors cannot read "not good": linear 78.3 %, cnn 82.6 % from the same
teacher (banking77: 90.7 and 91.4 %)."""


def layer_spread(n_teacher: int, k: int) -> list[int]:
    """Which teacher layers initialize a K-layer student: first and last kept, the rest evenly spread."""
    if not 1 <= k < n_teacher:
        raise ConfigError(f"--student layers:{k}: the teacher has {n_teacher} layers; K must be 1..{n_teacher - 1}.")
    if k == 1:
        return [n_teacher - 1]
    return sorted({int(np.floor(i * (n_teacher - 1) / (k - 1) + 0.5)) for i in range(k)})


def layer_student(teacher: TextClassifier, k: int, cfg: Any) -> Any:
    """A K-layer copy of a transformer teacher (a fresh :class:`TransformerModel`)."""
    from transformers import AutoModelForSequenceClassification


    tm = teacher.model_
    tconf = tm.model.config
    keep = layer_spread(tconf.num_hidden_layers, k)
    sconf = copy.deepcopy(tconf)
    sconf.num_hidden_layers = k
    student = AutoModelForSequenceClassification.from_config(sconf)
    state = {}
    for name, value in tm.model.state_dict().items():
        m = re.match(r"(.*\.layers?\.)(\d+)(\..*)", name)
        if m is None:
            state[name] = value.clone()
        elif int(m.group(2)) in keep:
            state[f"{m.group(1)}{keep.index(int(m.group(2)))}{m.group(3)}"] = value.clone()
    missing, unexpected = student.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConfigError(f"cannot copy the teacher's layers into a {k}-layer student ({type(tm.model).__name__}): "
                          f"missing {missing[:3]}, unexpected {unexpected[:3]}. Use a base model as --student instead.")
    return TransformerModel(cfg, student, copy.deepcopy(tm.tokenizer)), keep


def encoder_of(teacher: TextClassifier, teacher_dir: Path) -> Path | None:
    """The fine-tuned transformer directory whose encoder gives a static student its token vectors: the
    teacher itself, or, for an ensemble teacher (auto's usual winner), its transformer member under
    ``members/``; None when there is none (the student then uses the static family's default base)."""
    if teacher.family == "transformer":
        return teacher_dir
    if teacher.family == "ensemble":
        for i, info in enumerate(teacher.model_.member_infos):
            if info.get("family") == "transformer":
                return teacher_dir / "members" / str(i)
    return None


def teacher_logits(teacher: TextClassifier, teacher_dir: Path, texts: list[str], cache_dir: Path | None,
                   progress: bool = False) -> np.ndarray:
    """Teacher logits (N, K) for ``texts`` (log-probabilities for a sparse teacher), cached."""
    from safetensors.numpy import load_file, save_file

    h = hashlib.sha256()
    for f in sorted(Path(teacher_dir).glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".onnx", ".json") and f.name != "README.md":
            h.update(f.name.encode())
            h.update(hashlib.sha256(f.read_bytes()).digest())
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    key = h.hexdigest()[:24]
    path = cache_dir / f"teacher-logits-{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        return load_file(str(path))["logits"]
    from tqdm.auto import tqdm

    with tqdm(total=len(texts), desc="teacher soft labels", unit="text", disable=not progress, dynamic_ncols=True) as bar:
        if teacher.family == "transformer":
            logits = teacher.model_.logits_for_ids(teacher.model_.encode(texts), progress=bar)
        else:
            logits = np.log(np.clip(teacher.predict_proba(texts, progress=bar), 1e-12, 1)).astype(np.float32)
    if path is not None:
        from ..errors import no_space_left

        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # several ranks may write it at once
        with no_space_left(path.parent, "the teacher's logits cache was not written and nothing else was",
                           fix="free space there, or choose an --out on a disk with room"):
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                save_file({"logits": np.ascontiguousarray(logits, dtype=np.float32)}, str(tmp))
                tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)
    return logits


def _softmax(z: np.ndarray, T: float) -> np.ndarray:
    z = z / T
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def distill(teacher_dir: str | Path, train: LabeledData, dev: LabeledData, out: str | Path,
            cfg: DistillConfig | None = None, unlabeled: list[str] | None = None, params: dict[str, Any] | None = None,
            guard: GuardConfig | None = None, checkpoint_dir: str | Path | None = None, resume: bool = False,
            progress: bool = False, cache_dir: str | Path | None = None,
            guard_data: LabeledData | None = None) -> dict[str, Any]:
    """Distill ``teacher_dir`` into a student, measure it against the teacher, ship it or refuse.

    Args:
        params: student training settings (TransformerConfig fields such as epochs, lr, max_len);
            default: the teacher's own settings.
        guard_data: labeled data the guard measures on (default: ``dev``, which the student also
            uses for early stopping).
        cache_dir: where the teacher's logits are cached (default ``OUT.distill-cache``); students
            distilled from the same teacher and texts can share it.
    Returns:
        the compression report (also written to ``out/compression_report.json``).
    """
    cfg = cfg or DistillConfig()
    cfg.validate()
    kind, arg = parse_student(cfg.student)
    teacher_dir, out = Path(teacher_dir), Path(out)
    teacher = TextClassifier.load(teacher_dir)
    labels = teacher.classes_
    check_trainable(train)
    check_known_labels(train, labels, what="the teacher's labels")
    check_known_labels(dev, labels, what="the teacher's labels")
    unlabeled = [t for t in (unlabeled or []) if t.strip()]
    texts = train.texts + unlabeled
    index = {lab: i for i, lab in enumerate(labels)}
    y = np.array([index[v] for v in train.labels] + [-100] * len(unlabeled))
    cache = Path(cache_dir) if cache_dir else out.with_name(out.name + CACHE_SUFFIX)
    t0 = time.perf_counter()
    logits = teacher_logits(teacher, teacher_dir, texts, cache, progress)
    teacher_seconds = time.perf_counter() - t0
    distill_info = {"teacher": str(teacher_dir), "student": cfg.student, "alpha": cfg.alpha,
                    "temperature": cfg.temperature, "transfer_texts": len(unlabeled),
                    "teacher_logits_seconds": round(teacher_seconds, 2)}
    params = dict(params or {})

    def build(d: Path) -> None:
        t1 = time.perf_counter()
        y_dev = np.array([index[v] for v in dev.labels])
        task = FitTask(train=train, dev=dev, labels=labels, y_train=y, y_dev=y_dev, data_sha256=train.sha256(),
                       checkpoint_dir=checkpoint_dir or out.with_name(out.name + ".checkpoints"), resume=resume,
                       progress=progress)
        if kind == "sparse":
            student_cfg = make_config("sparse", **{k: v for k, v in params.items() if k == "seed"})
            target = _softmax(logits, cfg.temperature)
            labeled = y >= 0
            onehot = np.eye(len(labels))[y[labeled]]
            target[labeled] = (1 - cfg.alpha) * onehot + cfg.alpha * target[labeled]
            model = SparseModel(student_cfg).fit(texts, np.where(y >= 0, y, 0), len(labels), progress=progress,
                                                 soft=target)
            facts: dict[str, Any] = {"analyzers": model.kinds_}
        elif kind == "static":
            # a fine-tuned encoder (the teacher's, or its ensemble's transformer member) gives the token
            # vectors; else the default base
            enc = encoder_of(teacher, teacher_dir)
            base = {"base": str(enc)} if enc is not None else {}
            distill_info["token_vectors_from"] = str(enc) if enc is not None else "the static family's default base"
            other = sorted(set(params) - set(STATIC_FIELDS))
            if other:
                raise ConfigError(f"a static student takes {', '.join(STATIC_FIELDS)} only; got {', '.join(other)}.")
            base |= {"head": arg or STATIC_STUDENT_HEAD}
            student_cfg = make_config("static", **base | {k: v for k, v in params.items() if k in STATIC_FIELDS})
            target = _softmax(logits, cfg.temperature)
            labeled = y >= 0
            target[labeled] = (1 - cfg.alpha) * np.eye(len(labels))[y[labeled]] + cfg.alpha * target[labeled]
            model = StaticModel(student_cfg).fit(texts, np.where(y >= 0, y, 0), len(labels), dev.texts, y_dev,
                                                 soft=target, progress=progress)
            facts = model.facts_
        else:
            if teacher.family != "transformer" and kind == "layers":
                raise ConfigError("--student layers:K needs a transformer teacher; use --student sparse or a base model.")
            tinfo = teacher.info_.get("config", {}) if teacher.family == "transformer" else {}
            settings = {k: v for k, v in tinfo.items() if k not in ("base",)} | params
            if kind == "layers":
                # the student's head and pooler are the teacher's, already trained: no head LR boost
                settings = settings | {"head_lr_mult": 1.0} if "head_lr_mult" not in params else settings
                student_cfg = make_config("transformer", **settings | {"base": str(teacher_dir)})
                tm, keep = layer_student(teacher, arg, student_cfg)
                distill_info["teacher_layers_kept"] = keep
            else:
                student_cfg = make_config("transformer", **settings | {"base": arg})
                tm = TransformerModel.from_base(student_cfg, labels)
            fp = fingerprint(train.sha256(), dev.sha256(), labels, config_to_dict(student_cfg), distill_info["teacher"],
                             cfg.student, cfg.alpha, cfg.temperature, len(unlabeled), float(logits.sum()))
            weight = class_weights(y, len(labels)) if student_cfg.class_weights else None
            loss = Distillation(y, logits, cfg.alpha, cfg.temperature, weight)
            model, facts = train_encoded(tm, student_cfg, task, loss=loss, fp=fp, train_texts=texts)
            shutil.rmtree(task.checkpoint_dir, ignore_errors=True)
        student = TextClassifier.from_model(kind if kind in ("sparse", "static") else "transformer", model, labels,
                                            student_cfg)
        training = {"data": str(train.source), "data_sha256": train.sha256(), "rows": len(train), "dev": str(dev.source),
                    "dev_rows": len(dev), "skipped_empty": train.skipped, "seconds": round(time.perf_counter() - t1, 2)}
        student.describe(training | facts | {"distillation": distill_info}, dev)
        save_model(d, student.model_, student.info_, out.name)

    if distributed.env_world() > 1 and int(os.environ.get("RANK", "0") or 0) != 0:
        # under torchrun: the other ranks train the transformer student alongside rank 0 (DDP);
        # rank 0 alone measures it through the guard and writes it
        if kind != "sparse":
            with tempfile.TemporaryDirectory(prefix="niche-distill-rank-") as d:
                build(Path(d))
        return {"verdict": None, "rank": int(os.environ["RANK"])}
    return guarded(teacher_dir, out, guard_data or dev, build, f"distill --student {cfg.student}", guard,
                   result_name=f"student {cfg.student}", progress=progress)


def read_unlabeled(path: str | Path, text_col: str = "text") -> list[str]:
    """Transfer texts: one per line (.txt, stripped), or the ``text_col`` column of a CSV/TSV/JSONL/Parquet
    file; empty texts are dropped."""
    from ..data import read_texts

    is_txt = Path(path).suffix.lower() in (".txt", ".text", "")
    return [t.strip() if is_txt else t for t in read_texts(path, text_col) if t.strip()]


__all__ = ["DistillConfig", "distill", "layer_spread", "layer_student", "read_unlabeled", "teacher_logits"]
