"""ONNX runtime for the transformer family: the same tokenizer, long-text policy and batch plan as
the PyTorch model, with the forward pass in onnxruntime.

An ONNX niche directory holds ``model.onnx`` (inputs ``input_ids``/``attention_mask``, output
``logits``), the Hugging Face ``config.json`` (labels) and tokenizer files, and ``niche.json`` with
``"runtime": "onnx"``. ``TextClassifier.load`` picks this class from that field, so prediction,
evaluation and serving work unchanged. Written by :mod:`niche.compress` (export / quantize).

Batches without padding run a mask-free twin of the graph when it has onnxruntime
``MultiHeadAttention`` nodes (the int8 exports): onnxruntime's CPU flash-attention kernel only
runs when no key padding mask is given, and the mask of an unpadded batch changes nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import TransformerConfig
from ..errors import ConfigError, ModelLoadError
from ..encoders import pad_batch, plan_batches, quiet_hf
from .transformer import TransformerModel, check_tokenizer_files, check_vocab

ONNX_FILE = "model.onnx"
KEEP = ("model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
        "vocab.txt", "vocab.json", "merges.txt", "sentencepiece.bpe.model", "spiece.model", "added_tokens.json")


def need_onnxruntime() -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelLoadError("this model runs on onnxruntime, which is not installed: pip install 'niche[onnx]' "
                             "(or pip install onnxruntime).") from None
    return ort


SPIN = ("run", "always", "never")


def make_session(path: Path, threads: int = 0, model: bytes | None = None, spin: str = "run") -> Any:
    """An onnxruntime session for ``path`` (or for the serialized ``model``, read from ``path``).

    ``spin``: how idle intra-op threads wait. ``"run"`` (niche's default): they busy-wait between the
    operators of one run and sleep once it returns; ``"always"`` is onnxruntime's default (they keep
    spinning after a run, competing on a small CPU with the Python thread that prepares the next batch
    and with any other model's session); ``"never"``: they always sleep. Measured by
    ``benchmarks/onnx_runtime.py``."""
    if spin not in SPIN:
        raise ValueError(f"spin must be one of {SPIN}, got {spin!r}")
    ort = need_onnxruntime()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0" if spin == "never" else "1")
    if spin == "run":
        so.add_session_config_entry("session.force_spinning_stop", "1")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    try:
        return ort.InferenceSession(model if model is not None else str(path), so, providers=providers)
    except Exception as e:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"{path}: onnxruntime cannot load this model ({e}). Re-export it with `niche export`.") from None


def mask_free_graph(path: Path) -> bytes | None:
    """The graph at ``path`` with the key padding mask of every ``MultiHeadAttention`` node removed
    (serialized), or None when it has none. Same results for inputs without padding."""
    import onnx

    model = onnx.load(str(path))
    changed = False
    for node in model.graph.node:
        if node.op_type == "MultiHeadAttention" and len(node.input) > 4 and node.input[4]:
            node.input[4] = ""  # optional input left out: the flash-attention path
            changed = True
    return model.SerializeToString() if changed else None


class OnnxTransformerModel(TransformerModel):
    """Inference-only twin of :class:`TransformerModel` backed by an onnxruntime session."""

    def __init__(self, cfg: TransformerConfig, session: Any, tokenizer: Any, labels: list[str], src: Path,
                 threads: int = 0, path: Path | None = None):
        self.cfg = cfg
        self.session = session
        self.threads = threads
        self.path = Path(path) if path is not None else Path(src) / ONNX_FILE  # the graph the session runs
        self.mask_free = True  # run batches without padding on the mask-free twin graph (if there is one)
        self.spin = "run"  # how idle onnxruntime threads wait, see make_session (applied by set_threads)
        self._dense: Any = None  # the mask-free session, built at the first batch without padding
        self._dense_checked = False
        self.tokenizer = tokenizer
        self._labels = labels
        self.src = src
        self.model = None
        self.device = torch.device("cpu")
        self.cls_only = False
        self.call_overhead_tokens = 64

    @property
    def labels(self) -> list[str]:
        return list(self._labels)

    @classmethod
    def load(cls, d: Path, cfg: TransformerConfig) -> "OnnxTransformerModel":
        from transformers import AutoTokenizer

        if not (d / ONNX_FILE).is_file():
            raise ModelLoadError(f"{d}: niche.json says runtime onnx but there is no {ONNX_FILE}. Re-export the model.")
        try:
            config = json.loads((d / "config.json").read_text(encoding="utf-8"))
            id2label = config["id2label"]
            labels = [id2label[str(i)] for i in range(len(id2label))]
        except (OSError, KeyError, TypeError, AttributeError, ValueError) as e:
            raise ModelLoadError(f"{d}: config.json is missing or has no id2label ({e}). Re-export the model.") from None
        check_tokenizer_files(d)
        with quiet_hf():
            try:
                tok = AutoTokenizer.from_pretrained(str(d))
            except Exception as e:  # transformers raises OSError, ValueError, KeyError, ...
                raise ModelLoadError(f"{d}: cannot load the tokenizer ({type(e).__name__}: {str(e)[:300]}). "
                                     "Re-export the model with `niche export`.") from None
        if isinstance(config.get("vocab_size"), int):
            check_vocab(d, tok, config["vocab_size"])
        return cls(cfg, make_session(d / ONNX_FILE, cfg.threads), tok, labels, d, cfg.threads)

    def set_threads(self, threads: int) -> None:
        """Rebuild the session(s) with ``threads`` intra-op threads (and the current ``spin``)."""
        self.threads = threads
        self.session = make_session(self.path, threads, spin=self.spin)
        self._dense, self._dense_checked = None, False

    def _dense_session(self) -> Any:
        if not self._dense_checked:
            self._dense_checked = True
            graph = mask_free_graph(self.path)
            if graph is not None:
                self._dense = make_session(self.path, self.threads, model=graph, spin=self.spin)
        return self._dense

    def save(self, d: Path) -> None:
        for name in KEEP:
            if (self.src / name).is_file():
                shutil.copy2(self.src / name, d / name)

    def logits_for_ids(self, encoded: list[list[int]], batch_size: int | None = None,
                       progress: Any = None) -> np.ndarray:
        bs = batch_size or self.cfg.eval_batch_size
        out = np.zeros((len(encoded), len(self._labels)), dtype=np.float32)
        pad = self.tokenizer.pad_token_id or 0
        for idx in plan_batches([len(x) for x in encoded], bs, self.call_overhead_tokens):
            rows = [encoded[i] for i in idx]
            ids, mask = pad_batch(rows, pad)
            T = ids.shape[1]
            unpadded = self.mask_free and T == min(len(x) for x in rows)
            session = (self._dense_session() or self.session) if unpadded else self.session
            out[idx] = session.run(["logits"], {"input_ids": ids, "attention_mask": mask})[0]
            if progress is not None:
                progress.update(len(idx))
        return out


# -- the runtime protocol (see niche.families) -----------------------------------------------------

CONFIG = None  # a runtime: the config is the one of the family the model was exported from


def fit(cfg: Any, task: Any) -> Any:
    raise ConfigError("onnx is an inference runtime; train a transformer model and export it with `niche export`.")


def load(path: Path, cfg: Any, info: dict[str, Any]) -> OnnxTransformerModel:
    return OnnxTransformerModel.load(path, cfg)


def card_facts(info: dict[str, Any], name: str) -> tuple[list[str], list[str]]:
    return [f"- base: `{info.get('base')}`, exported to ONNX ({info.get('precision', 'fp32')}, onnxruntime)"], []
