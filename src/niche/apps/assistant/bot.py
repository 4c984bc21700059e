"""A customer-service assistant that answers intents and says "I don't know" when it should.

Three parts, built only on niche's public pieces:

1. an intent classifier (:class:`~niche.TextClassifier`, fine-tuned on the in-scope utterances);
2. retrieval over the training utterances with mean-pooled sentence embeddings of the base
   encoder (exact cosine search, a matrix product; 15k utterances x 384 dims is 23 MB);
3. an abstention rule with thresholds chosen on a dev split for a target out-of-scope precision.

A query is answered (``in_scope``) only when *all* of these hold:

- the classifier's top probability ``p`` is at least ``t_prob``;
- its cosine similarity ``s`` to the nearest in-scope training utterance is at least ``t_sim``;
- when out-of-scope training examples exist: ``s`` exceeds the similarity to the nearest
  out-of-scope example by at least ``t_margin``.

The thresholds are picked by a grid search on the dev split: among the rules whose out-of-scope
precision on dev is at least ``target_oos_precision``, the one with the highest
``in-scope accuracy + out-of-scope recall``. Without out-of-scope examples in dev no precision can
be measured; the rule then rejects ``in_scope_reject_rate`` of the in-scope dev queries (on
``p`` alone) and says so in its calibration record.

    from niche.apps.assistant import Assistant, AssistantConfig
    bot = Assistant.build(read_labeled("train.csv"), dev=read_labeled("dev.csv"), answers={...})
    bot.answer("how do I reset my pin")  # {"intent", "answer", "confidence", "matched_example", "in_scope"}
    bot.save("my-assistant")
"""

from __future__ import annotations

import csv
import datetime as dt
import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from ... import LabeledData, TextClassifier, read_labeled, stratified_split
from ...config import DEFAULT_BASE
from ...encoders import SentenceEncoder
from ...errors import ConfigError, DataError, ModelLoadError
from ...modeldir import write_dir_atomically, write_json
from .calibration import Thresholds, calibrate, decide, oos_metrics

META = "assistant.json"
FORMAT_VERSION = 1


@dataclass
class AssistantConfig:
    """How an assistant is built. Every field is recorded in ``assistant.json``."""

    family: str = "transformer"
    """Intent classifier family (``transformer`` or ``sparse``)."""
    classifier: dict[str, Any] = field(default_factory=lambda: {"epochs": 5, "max_len": 32})
    """Settings of the intent classifier (see ``TransformerConfig``/``SparseConfig``). Utterances are
    short: 32 tokens cover 99.9 % of CLINC150."""
    encoder: str = DEFAULT_BASE
    """Sentence encoder for retrieval (mean pooling). Copied into the assistant directory."""
    embed_max_len: int = 64
    oos_label: str = "oos"
    """Label that marks out-of-scope examples in the data."""
    target_oos_precision: float = 0.9
    """Calibration target: of the queries the assistant declines, at least this share should really
    be out of scope (measured on dev)."""
    expected_oos_rate: float | None = None
    """Share of out-of-scope questions expected in real traffic. Precision depends on it: the same
    rule declines mostly out-of-scope questions when they are common and mostly in-scope ones when
    they are rare. Calibration reweights the dev out-of-scope examples to this share; ``None``
    takes dev's own share as it is."""
    in_scope_reject_rate: float = 0.02
    """Used only when dev has no out-of-scope examples: decline this share of in-scope dev queries."""
    dev_fraction: float = 0.2
    """When no dev set is given, this stratified share of the data is held out for early stopping
    and calibration."""
    fallback_answer: str = "Sorry, I can't help with that. Could you rephrase, or ask for a person?"
    seed: int = 42

    def validate(self) -> None:
        if self.family not in ("transformer", "sparse"):
            raise ConfigError(f"family must be transformer or sparse, got {self.family!r}.")
        if not 0 < self.target_oos_precision <= 1:
            raise ConfigError(f"target_oos_precision must be in (0, 1], got {self.target_oos_precision}.")
        if self.expected_oos_rate is not None and not 0 < self.expected_oos_rate < 1:
            raise ConfigError(f"expected_oos_rate must be in (0, 1), got {self.expected_oos_rate}.")
        if not 0 <= self.in_scope_reject_rate < 1:
            raise ConfigError(f"in_scope_reject_rate must be in [0, 1), got {self.in_scope_reject_rate}.")
        if not 0 < self.dev_fraction < 1:
            raise ConfigError(f"dev_fraction must be in (0, 1), got {self.dev_fraction}.")


# -- the assistant -------------------------------------------------------------------------
def read_answers(path: str | Path) -> dict[str, str]:
    """Canned answers: a CSV with header ``label,answer`` (one row per intent)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: answers file not found; expected a CSV with header label,answer.")
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"label", "answer"} <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the header label,answer; found {', '.join(reader.fieldnames or []) or 'nothing'}. "
                            "Rename the columns to label and answer.")
        out: dict[str, str] = {}
        for i, row in enumerate(reader, start=2):
            label, answer = (row.get("label") or "").strip(), (row.get("answer") or "").strip()
            if not label or not answer:
                raise DataError(f"{path}: line {i}: empty label or answer; every row needs both.")
            if label in out:
                raise DataError(f"{path}: line {i}: a second answer for {label!r}; keep one row per intent.")
            out[label] = answer
    return out


class Assistant:
    """Intent classifier + retrieval + calibrated abstention. Build with :meth:`build`, or :meth:`load`."""

    def __init__(self, config: AssistantConfig, classifier: TextClassifier, encoder: SentenceEncoder,
                 examples: list[str], example_labels: list[str], index: np.ndarray, thresholds: Thresholds,
                 answers: dict[str, str], info: dict[str, Any]):
        self.config = config
        self.classifier = classifier
        self.encoder = encoder
        self.examples = examples
        self.example_labels = example_labels
        self.index = index  # (n_examples, dim), unit rows
        self.thresholds = thresholds
        self.answers = answers
        self.info = info
        self._is_oos_example = np.array([lab == config.oos_label for lab in example_labels], dtype=bool)

    # -- build ------------------------------------------------------------------------------
    @classmethod
    def build(cls, data: LabeledData, *, dev: LabeledData | None = None, answers: dict[str, str] | None = None,
              config: AssistantConfig | None = None, classifier: TextClassifier | None = None,
              progress: bool = False) -> "Assistant":
        """Train the classifier, embed the utterances, calibrate the abstention rule.

        Args:
            data: labeled utterances; rows labeled ``config.oos_label`` are out-of-scope examples.
            dev: labeled dev utterances for early stopping and calibration (default: a stratified
                ``config.dev_fraction`` of ``data``). Out-of-scope rows in dev make calibration
                for a target precision possible.
            answers: canned answer per intent; intents without one answer with their name.
            classifier: an already trained intent classifier to use instead of training one (its
                classes must be the in-scope intents of ``data``).
        """
        cfg = config or AssistantConfig()
        cfg.validate()
        oos = cfg.oos_label
        if dev is None:
            data, dev = stratified_split(data, cfg.dev_fraction, seed=cfg.seed)
        in_idx = [i for i, lab in enumerate(data.labels) if lab != oos]
        if len(in_idx) == 0:
            raise DataError(f"{data.source}: every row is labeled {oos!r}; the assistant needs in-scope intents to answer.")
        train_in = data.subset(in_idx)
        dev_in = dev.subset([i for i, lab in enumerate(dev.labels) if lab != oos])
        if len(dev_in) == 0:
            raise DataError(f"{dev.source}: the dev data has no in-scope rows; it needs examples of the intents.")
        unknown = sorted(set(answers or {}) - set(train_in.classes))
        if unknown:
            raise DataError(f"answers given for intents not in the training data: {', '.join(unknown[:10])}. "
                            "Fix the label names in the answers file.")

        if classifier is None:
            clf = TextClassifier(cfg.family, **cfg.classifier).fit(train_in, eval_data=dev_in, progress=progress)
        else:
            clf = classifier
            if sorted(clf.classes_) != train_in.classes:
                raise DataError(f"the given classifier knows {len(clf.classes_)} intents but the data has "
                                f"{len(train_in.classes)} in-scope intents; train it on the same in-scope labels.")
        encoder = SentenceEncoder.load(cfg.encoder, max_len=cfg.embed_max_len)
        index = encoder.embed(data.texts)
        th = Thresholds()
        bot = cls(cfg, clf, encoder, list(data.texts), list(data.labels), index, th, dict(answers or {}), {})

        prob, label, sim, margin, _ = bot._features(dev.texts)
        is_oos = np.array([lab == oos for lab in dev.labels])
        correct = np.array([p == y for p, y in zip(label, dev.labels)])
        th, record = calibrate(prob, sim, margin, correct, is_oos, cfg.target_oos_precision,
                               cfg.in_scope_reject_rate, use_margin=bool(bot._is_oos_example.any()),
                               oos_rate=cfg.expected_oos_rate)
        bot.thresholds = th
        bot.info = {
            "format_version": FORMAT_VERSION,
            "kind": "assistant",
            "config": asdict(cfg),
            "thresholds": asdict(th),
            "calibration": record,
            "intents": clf.classes_,
            "examples": len(data), "oos_examples": int(bot._is_oos_example.sum()),
            "data": str(data.source), "dev": str(dev.source), "dev_rows": len(dev),
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        return bot

    # -- inference --------------------------------------------------------------------------
    def _features(self, texts: list[str]) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Per query: top probability, top intent, similarity to the nearest in-scope example,
        margin over the nearest out-of-scope example, index of the nearest in-scope example."""
        proba = self.classifier.predict_proba(texts)
        top = proba.argmax(1)
        prob = proba[np.arange(len(texts)), top]
        label = [self.classifier.classes_[i] for i in top]
        sims = self.encoder.embed(texts) @ self.index.T  # (n_queries, n_examples) cosine
        in_sims = np.where(self._is_oos_example[None, :], -np.inf, sims)
        nearest = in_sims.argmax(1)
        sim = in_sims[np.arange(len(texts)), nearest]
        if self._is_oos_example.any():
            oos_sim = np.where(self._is_oos_example[None, :], sims, -np.inf).max(1)
            margin = sim - oos_sim
        else:
            margin = np.full(len(texts), np.inf)
        return prob, label, sim, margin, nearest

    def answer(self, texts: str | list[str]) -> list[dict[str, Any]]:
        """Answer one text or a list of texts.

        Returns:
            one dict per text: ``intent`` (the classifier's, also when declined), ``answer`` (the
            canned answer, or the fallback when declined), ``confidence`` (the classifier's top
            probability), ``similarity`` and ``matched_example`` (the nearest training utterance),
            ``in_scope``.
        """
        single = isinstance(texts, str)
        batch = [texts] if single else list(texts)
        if not batch:
            return []
        for i, t in enumerate(batch):
            if not isinstance(t, str) or not t.strip():
                raise DataError(f"text {i} is empty or not a string; send non-empty texts.")
        prob, label, sim, margin, nearest = self._features(batch)
        ok = decide(prob, sim, margin, self.thresholds)
        out = []
        for i in range(len(batch)):
            intent = label[i]
            out.append({
                "intent": intent,
                "answer": self.answers.get(intent, intent) if ok[i] else self.config.fallback_answer,
                "confidence": round(float(prob[i]), 6),
                "similarity": round(float(sim[i]), 6),
                "matched_example": self.examples[int(nearest[i])],
                "in_scope": bool(ok[i]),
            })
        return out

    def predict(self, texts: list[str]) -> list[str]:
        """The intent per text, or ``config.oos_label`` where the assistant declines."""
        return [a["intent"] if a["in_scope"] else self.config.oos_label for a in self.answer(texts)]

    def evaluate(self, data: LabeledData) -> dict[str, Any]:
        """In-scope accuracy (a declined in-scope query counts as wrong), out-of-scope recall and
        precision, on labeled data whose out-of-scope rows carry ``config.oos_label``."""
        return oos_metrics(data.labels, self.predict(data.texts), self.config.oos_label)

    # -- persistence ------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the assistant directory atomically: ``assistant.json``, ``classifier/``,
        ``encoder/``, ``index.safetensors``, ``examples.jsonl``, ``answers.json``."""
        from safetensors.numpy import save_file

        path = Path(path)

        def fill(d: Path) -> None:
            self.classifier.save(d / "classifier")
            self.encoder.save(d / "encoder")
            save_file({"embeddings": np.ascontiguousarray(self.index, dtype=np.float32)}, str(d / "index.safetensors"))
            with (d / "examples.jsonl").open("w", encoding="utf-8") as f:
                for t, lab in zip(self.examples, self.example_labels):
                    f.write(json.dumps({"text": t, "label": lab}, ensure_ascii=False) + "\n")
            (d / "answers.json").write_text(json.dumps(self.answers, indent=1, ensure_ascii=False), encoding="utf-8")
            write_json(d / META, self.info | {"thresholds": asdict(self.thresholds)})

        write_dir_atomically(path, fill)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Assistant":
        from safetensors.numpy import load_file

        path = Path(path)
        meta = path / META
        if not meta.is_file():
            raise ModelLoadError(f"{path}: no {META}; not an assistant directory. Build one with "
                                 f"`niche assistant build --data TRAIN --out {path}`.")
        try:
            info = json.loads(meta.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ModelLoadError(f"{meta}: corrupt JSON ({e}); rebuild the assistant.") from None
        known = {f.name for f in fields(AssistantConfig)}
        cfg = AssistantConfig(**{k: v for k, v in info.get("config", {}).items() if k in known})
        th = Thresholds(**info["thresholds"])
        examples, labels = [], []
        with (path / "examples.jsonl").open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                examples.append(rec["text"])
                labels.append(rec["label"])
        index = load_file(str(path / "index.safetensors"))["embeddings"]
        if index.shape[0] != len(examples):
            raise ModelLoadError(f"{path}: index.safetensors has {index.shape[0]} rows but examples.jsonl "
                                 f"{len(examples)}; the directory is inconsistent, rebuild it.")
        answers = json.loads((path / "answers.json").read_text(encoding="utf-8"))
        return cls(cfg, TextClassifier.load(path / "classifier"),
                   SentenceEncoder.load(path / "encoder", max_len=cfg.embed_max_len),
                   examples, labels, index, th, answers, info)


def is_assistant_dir(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def read_utterances(path: str | Path, text_col: str = "text", label_col: str = "label") -> LabeledData:
    """Labeled utterances (``text,label``; ``oos`` marks out-of-scope rows)."""
    return read_labeled(path, text_col=text_col, label_col=label_col)
