"""Looking inside a transformer classifier: which tokens the classification token attends to.

Example:
    >>> from niche import TextClassifier
    >>> from niche.explain import cls_attention
    >>> clf = TextClassifier.load("runs/demo/transformer")        # doctest: +SKIP
    >>> cls_attention(clf, "my card has not arrived")["tokens"]     # doctest: +SKIP
    ['[CLS]', 'my', 'card', 'has', 'not', 'arrived', '[SEP]']
"""

from __future__ import annotations

from typing import Any

import torch

from .errors import ConfigError


@torch.inference_mode()
def cls_attention(clf: Any, text: str) -> dict[str, Any]:
    """Last-layer attention from the first (classification) token to every token, averaged over
    heads, for one text encoded exactly as for prediction (same long-text policy).

    Returns:
        ``{"tokens": [str, ...], "weights": [float, ...]}`` with weights summing to 1.
    Raises:
        ConfigError: the model is not a transformer (sparse models have no attention).
    """
    if getattr(clf, "family", None) != "transformer":
        raise ConfigError("attention maps exist only for transformer models; this model is "
                          f"{getattr(clf, 'family', type(clf).__name__)!r}.")
    tm = clf.model_
    model = tm.model
    (ids,) = tm.encode([text])
    inputs = tm.collate([ids])
    previous = model.config._attn_implementation
    # SDPA kernels do not return attention weights; switch to the eager path for this call only.
    if previous != "eager":
        model.set_attn_implementation("eager")
    try:
        out = model(**inputs, output_attentions=True)
    finally:
        if previous != "eager":
            model.set_attn_implementation(previous)
    att = out.attentions[-1][0]  # (heads, T, T) for the single text
    w = att[:, 0, :].mean(0)  # (T,): row of the first token, averaged over heads
    w = (w / w.sum()).float().cpu().tolist()
    return {"tokens": tm.tokenizer.convert_ids_to_tokens(ids), "weights": w}
