"""Compress for the target box — ONNX export, int8 quantization, distillation — behind one guard.

Every compress command builds its result in a temporary sibling of ``--out``, then measures the
source and the result **in the same run, on this CPU, on the user's dev data**: accuracy,
macro-F1, docs/s at batch 32, p50 ms for one text at batch 1, and size on disk (speed rounds
alternate between the two models so that machine noise hits both). It writes
``compression_report.md``/``.json`` and an accuracy-vs-throughput PNG. The result is renamed into
``--out`` only when it passes: it loses at most ``max_drop`` accuracy points and is faster, and,
for exports, agrees with the source on at least 99.5 % of the dev labels. Otherwise nothing is
written to ``--out`` (the report goes to ``OUT.refused/``) and :class:`CompressionRefused` says why.

    from niche.compress import export, GuardConfig
    export("runs/intents", "runs/intents-int8", dev, int8=True, guard=GuardConfig(max_drop=0.5))
"""

from ..config import DistillConfig, GuardConfig
from .distill import distill, layer_spread, parse_student, read_unlabeled
from .guard import CompressionRefused, guarded, judge, measure, write_report
from .guard import require_dev
from .onnx import export, quantize, write_onnx

__all__ = ["CompressionRefused", "GuardConfig", "DistillConfig", "export", "quantize", "distill", "guarded", "judge",
           "measure", "write_report", "write_onnx", "require_dev", "layer_spread", "parse_student", "read_unlabeled"]
