"""The customer-service assistant: intent classifier + retrieval + calibrated abstention.

    from niche.apps.assistant import Assistant, AssistantConfig

:mod:`.bot` holds :class:`Assistant` and its directory format, :mod:`.calibration` the
abstention rule and the out-of-scope metrics. ``niche serve`` serves an assistant directory
through :mod:`niche.serving.assistant`.
"""

from .bot import META, Assistant, AssistantConfig, is_assistant_dir, read_answers, read_utterances
from .calibration import Thresholds, calibrate, decide, oos_metrics

__all__ = ["META", "Assistant", "AssistantConfig", "Thresholds", "calibrate", "decide", "is_assistant_dir",
           "oos_metrics", "read_answers", "read_utterances"]
