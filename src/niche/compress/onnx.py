"""ONNX export (``niche export``) and int8 quantization (``niche quantize``) of transformer models.

:func:`write_onnx` exports the classifier's logits graph, fuses BERT attention/LayerNorm/GELU with
onnxruntime's transformer optimizer (:func:`fuse_bert`) and optionally quantizes it
(:mod:`niche.compress.int8`); :func:`export` and :func:`quantize` run it behind the guard.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

from ..classifier import TextClassifier
from ..config import GuardConfig
from ..data import LabeledData
from ..errors import ConfigError
from ..modeldir import write_info
from .guard import guarded
from .int8 import quantize_with_fallback


def fuse_bert(path: Path, config: Any, separate_qkv: bool = False) -> dict[str, Any]:
    """Rewrite a BERT-style ONNX graph with onnxruntime's transformer optimizer: attention blocks,
    residual + LayerNorm, bias + GELU and the embedding block become onnxruntime's fused CPU/GPU
    kernels. Same math (checked by the export's parity test). Returns what was fused; leaves the
    file untouched, with the reason, when the model is not BERT-style or the optimizer fails.

    ``separate_qkv``: fuse attention into ``MultiHeadAttention`` and keep the query/key/value
    projections as MatMuls, which int8 then quantizes (the packed ``Attention`` operator, faster in
    fp32, holds them as one weight that blockwise int8 cannot reach)."""
    import logging

    if getattr(config, "model_type", None) != "bert":
        return {"fused": False, "reason": f"model_type {getattr(config, 'model_type', None)!r} is not bert"}
    try:
        from onnxruntime.transformers.fusion_options import FusionOptions
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError as e:
        return {"fused": False, "reason": f"onnxruntime.transformers unavailable: {e}"}
    quiet = [logging.getLogger(n) for n in ("", "onnxruntime", "onnx_model", "fusion_base")]
    levels = [lg.level for lg in quiet]
    for lg in quiet:
        lg.setLevel(logging.ERROR)
    try:
        options = FusionOptions("bert")
        options.use_multi_head_attention = separate_qkv
        opt = optimize_model(str(path), model_type="bert", num_heads=config.num_attention_heads,
                             hidden_size=config.hidden_size, opt_level=0, optimization_options=options)
        ops = {k: v for k, v in opt.get_fused_operator_statistics().items() if v}
        opt.save_model_to_file(str(path))
    except Exception as e:  # the optimizer raises plain exceptions on graphs it does not expect
        return {"fused": False, "reason": f"{type(e).__name__}: {e}"}
    finally:
        for lg, lv in zip(quiet, levels):
            lg.setLevel(lv)
    return {"fused": True, "operators": ops}


def _torch_transformer(clf: TextClassifier, what: str) -> Any:
    from ..families.transformer import TransformerModel

    if clf.family != "transformer" or type(clf.model_) is not TransformerModel:
        raise ConfigError(f"{what} needs a PyTorch transformer model; this one is family={clf.family!r}, "
                          f"runtime={clf.info_.get('runtime', 'torch')!r}. Pass the fp32 PyTorch model directory.")
    return clf.model_


def write_onnx(clf: TextClassifier, d: Path, int8: bool = False, opset: int = 17,
               calibration: list[str] | None = None, min_agreement: float = 0.995, fuse: bool = True) -> None:
    """Write an ONNX niche directory for a PyTorch transformer model (fp32, or int8 weights).

    With ``int8``, ``calibration`` texts choose how much stays fp32 (see ``quantize_with_fallback``).
    With ``fuse`` (BERT-style models), the graph is exported from the eager attention path and
    rewritten by onnxruntime's transformer optimizer (:func:`fuse_bert`) before any quantization."""

    import torch

    from ..families.onnx import ONNX_FILE, need_onnxruntime
    from ..encoders import eager_attention

    tm = _torch_transformer(clf, "ONNX export")
    need_onnxruntime()
    fast = tm.cls_only and tm._cls_only_supported()
    model = tm.model.to("cpu").eval()

    class Logits(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            inputs = {"input_ids": input_ids, "attention_mask": attention_mask}
            return tm._logits_cls_only(inputs) if fast else self.model(**inputs).logits

    ids = torch.full((2, 16), tm.tokenizer.pad_token_id or 0, dtype=torch.long)
    ids[:, 0] = 101 % model.config.vocab_size
    mask = torch.ones_like(ids)
    mask[1, 10:] = 0
    fp32 = d / ("model-fp32.onnx" if int8 else ONNX_FILE)
    import warnings

    eager = fuse and getattr(model.config, "model_type", None) == "bert"  # the pattern fuse_bert recognizes
    with warnings.catch_warnings(), torch.no_grad(), (eager_attention(model) if eager else contextlib.nullcontext()):
        warnings.simplefilter("ignore")
        torch.onnx.export(Logits(), (ids, mask), str(fp32), input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"},
                                        "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    tm.model.to(tm.device)
    fusion = fuse_bert(fp32, model.config, separate_qkv=int8) if fuse else {"fused": False, "reason": "not requested"}
    int8_info = None
    if int8:
        int8_info = quantize_with_fallback(clf, fp32, d / ONNX_FILE, calibration or [], min_agreement)
        fp32.unlink()
    model.config.save_pretrained(str(d))
    tm.tokenizer.save_pretrained(str(d))
    info = json.loads(json.dumps(clf.info_))
    info["runtime"] = "onnx"
    info["precision"] = "int8" if int8 else "fp32"
    info["onnx"] = {"file": ONNX_FILE, "opset": opset, "cls_only_last_layer": fast, "fusion": fusion,
                    "quantization": int8_info}
    write_info(d, info)
    (d / "README.md").write_text(
        f"# ONNX ({info['precision']}) export\n\nExported by `niche export` from a niche transformer model "
        f"(base `{info.get('base')}`). Load with `niche.TextClassifier.load(dir)` (onnxruntime) or serve with "
        "`niche serve`. See `compression_report.md` for the guard's measurements.\n", encoding="utf-8")


def export(model: str | Path, out: str | Path, dev: LabeledData, int8: bool = False, guard: GuardConfig | None = None,
           progress: bool = False, calibration: list[str] | None = None, fuse: bool = True) -> dict[str, Any]:
    """ONNX export (fp32 or int8) with the parity check and the guard; returns the report.

    Args:
        calibration: texts that pick the int8 mixed-precision level (default: the first 2,000 dev
            texts; pass held-out texts to keep the guard's data out of that choice).
        fuse: fuse attention/LayerNorm/GELU with onnxruntime's transformer optimizer (BERT-style models).
    """
    src = TextClassifier.load(model)
    _torch_transformer(src, "ONNX export")
    kind = "onnx-int8" if int8 else "onnx-fp32"
    guard = guard or GuardConfig()
    calib = list(calibration) if calibration is not None else dev.texts[:2000]
    return guarded(Path(model), Path(out), dev,
                   lambda d: write_onnx(src, d, int8=int8, calibration=calib, min_agreement=guard.min_agreement,
                                        fuse=fuse),
                   f"export --format onnx{' --int8' if int8 else ''}", guard, check_parity=True,
                   result_name=kind, progress=progress)


def quantize(model: str | Path, out: str | Path, dev: LabeledData, guard: GuardConfig | None = None,
             progress: bool = False, calibration: list[str] | None = None, fuse: bool = True) -> dict[str, Any]:
    """int8 dynamic quantization. On this CPU onnxruntime's int8 kernels beat PyTorch's (whose
    ``torch.ao.quantization`` is deprecated in torch 2.13), so the result is an int8 ONNX model."""
    return export(model, out, dev, int8=True, guard=guard, progress=progress, calibration=calibration, fuse=fuse)


