"""Looking inside a transformer: attention maps per layer and head, the classification token's
attention, and gradient x input token importance (``niche explain``; the server's ``explain`` flag
uses :func:`cls_attention`).

Example:
    >>> from niche import TextClassifier
    >>> from niche.explain import cls_attention
    >>> clf = TextClassifier.load("runs/demo/transformer")        # doctest: +SKIP
    >>> cls_attention(clf, "my card has not arrived")["tokens"]     # doctest: +SKIP
    ['[CLS]', 'my', 'card', 'has', 'not', 'arrived', '[SEP]']
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np
import torch

from .errors import ConfigError
from .encoders import eager_attention


def has_attention(clf: Any) -> bool:
    """True for PyTorch attention models (not sparse, ONNX, ensembles or BiLSTMs)."""
    net = getattr(getattr(clf, "model_", None), "model", None)
    return getattr(clf, "family", None) in ("transformer", "scratch") and \
        hasattr(getattr(net, "config", None), "num_attention_heads")


@torch.inference_mode()
def cls_attention(clf: Any, text: str) -> dict[str, Any]:
    """Last-layer attention from the first (classification) token to every token, averaged over
    heads, for one text encoded exactly as for prediction (same long-text policy).

    Returns:
        ``{"tokens": [str, ...], "weights": [float, ...]}`` with weights summing to 1.
    Raises:
        ConfigError: the model is not a transformer (sparse models have no attention).
    """
    if not has_attention(clf):
        raise ConfigError("attention maps exist only for transformer models; this model is "
                          f"{getattr(clf, 'family', type(clf).__name__)!r}"
                          f"{' (' + type(clf.model_.model).__name__ + ')' if hasattr(getattr(clf, 'model_', None), 'model') else ''}.")
    tm = clf.model_
    model = tm.model
    (ids,) = tm.encode([text])
    inputs = tm.collate([ids])
    with eager_attention(model):
        out = model(**inputs, output_attentions=True)
    att = out.attentions[-1][0]  # (heads, T, T) for the single text
    w = att[:, 0, :].mean(0)  # (T,): row of the first token, averaged over heads
    w = (w / w.sum()).float().cpu().tolist()
    return {"tokens": tm.tokenizer.convert_ids_to_tokens(ids), "weights": w}


def _load_any(model: Any) -> tuple[Any, Any, Any, list[str] | None]:
    """(torch model, tokenizer, TransformerModel or None, labels or None) from a TextClassifier, a niche
    model directory, or a plain Hugging Face directory (a masked LM or encoder: attention only)."""
    from pathlib import Path

    if hasattr(model, "model_"):
        clf = model
    else:
        p = Path(model)
        if (p / "niche.json").is_file():
            from .classifier import TextClassifier

            clf = TextClassifier.load(p)
        else:
            from .encoders import load_pretrained

            tok, m = load_pretrained(str(model), "the model", "Pass a niche model directory or a Hugging Face "
                                     "encoder directory.")
            return m.eval(), tok, None, None
    tm = getattr(clf, "model_", None)
    if getattr(tm, "model", None) is None or not hasattr(tm, "encode"):
        raise ConfigError(f"attention maps exist only for PyTorch transformer models; this model is "
                          f"{getattr(clf, 'family', type(clf).__name__)!r}"
                          f"{' (ONNX runtime)' if getattr(clf, 'info_', {}).get('runtime') == 'onnx' else ''}.")
    if not hasattr(tm.model.config, "num_attention_heads"):
        raise ConfigError(f"{type(tm.model).__name__} has no attention layers (e.g. a BiLSTM); explain needs a transformer.")
    return tm.model, tm.tokenizer, tm, list(clf.classes_)


def explain(model: Any, text: str, target: str | None = None) -> dict[str, Any]:
    """Attention maps and token importance for one text.

    Args:
        model: a :class:`~niche.TextClassifier` (transformer family), a niche model directory, or a plain
            Hugging Face encoder/masked-LM directory (then only the attention maps are computed).
        target: the label whose score the importance explains; default: the predicted label.
    Returns:
        ``tokens``; ``attentions`` (layers, heads, T, T) float32 array; ``cls_attention`` (layers, T):
        the first token's attention averaged over heads; ``importance`` (T,): gradient x input of the
        target logit w.r.t. the input embeddings, L2 norm per token, normalized to sum 1 (None without a
        classifier); ``label``, ``scores`` (label -> probability) for classifiers.
    """
    net, tok, tm, labels = _load_any(model)
    if tm is not None:
        (ids,) = tm.encode([text])
        inputs = tm.collate([ids])
    else:
        enc = tok(text, truncation=True, max_length=min(tok.model_max_length or 512, 512), return_tensors="pt",
                  return_token_type_ids=False)
        dev = next(net.parameters()).device
        inputs = {k: v.to(dev) for k, v in enc.items()}
        ids = enc["input_ids"][0].tolist()
    was_training = net.training
    stack = contextlib.ExitStack()
    net.eval()
    try:
        stack.enter_context(eager_attention(net))
        emb_layer = net.get_input_embeddings()
        captured: dict[str, torch.Tensor] = {}

        def hook(_m: Any, _i: Any, out: torch.Tensor) -> torch.Tensor:
            out.retain_grad()
            captured["emb"] = out
            return out

        handle = emb_layer.register_forward_hook(hook)
        try:
            with torch.enable_grad():
                out = net(**inputs, output_attentions=True)
                result: dict[str, Any] = {}
                importance = None
                if labels is not None:
                    logits = out.logits[0].float()
                    probs = torch.softmax(logits, -1)
                    if target is not None and target not in labels:
                        raise ConfigError(f"target {target!r} is not a label of this model; labels: {', '.join(labels)}.")
                    k = labels.index(target) if target is not None else int(probs.argmax())
                    logits[k].backward()
                    e = captured["emb"]
                    gx = (e.grad[0] * e[0]).detach().float()
                    imp = gx.norm(dim=-1)
                    special = torch.tensor([t in tok.all_special_ids for t in ids], device=imp.device)
                    imp = imp.masked_fill(special, 0.0)  # [CLS]/[SEP] carry no content; rank real tokens
                    importance = (imp / imp.sum().clamp(min=1e-12)).cpu().numpy()
                    result |= {"label": labels[k], "scores": {lab: float(p) for lab, p in zip(labels, probs.tolist())}}
        finally:
            handle.remove()
        att = torch.stack([a[0] for a in out.attentions]).detach().float().cpu().numpy()  # (L, H, T, T)
    finally:
        stack.close()
        net.train(was_training)
        net.zero_grad(set_to_none=True)
    cls = att[:, :, 0, :].mean(1)
    return result | {"tokens": tok.convert_ids_to_tokens(ids), "attentions": att,
                     "cls_attention": cls / cls.sum(-1, keepdims=True), "importance": importance}


def plot_attention(res: dict[str, Any], out_dir: Any) -> list[Any]:
    """Write ``attention_heads.png`` (a layers x heads grid of attention maps) and
    ``cls_attention.png`` (per layer, the first token's head-averaged attention, plus the importance);
    returns the paths."""
    from pathlib import Path

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import font_manager

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokens = res["tokens"]
    att = res["attentions"]
    L, H, T, _ = att.shape
    cjk = [f.name for f in font_manager.fontManager.ttflist if any(k in f.name for k in ("CJK", "WenQuanYi", "Noto Sans SC", "SimHei"))]
    if cjk:
        plt.rcParams["font.sans-serif"] = [cjk[0], "DejaVu Sans"]
    elif any(_is_cjk(t) for t in tokens):  # no CJK font installed: number the tokens instead of boxes
        tokens = [f"{i}" if _is_cjk(t) else t for i, t in enumerate(tokens)]
    show_ticks = T <= 40
    fig, axes = plt.subplots(L, H, figsize=(1.9 * H + 1, 1.9 * L + 1), squeeze=False)
    for l in range(L):
        for h in range(H):
            ax = axes[l][h]
            ax.imshow(att[l, h], cmap="viridis", vmin=0, vmax=max(float(att[l, h].max()), 1e-6))
            ax.set_xticks([])
            ax.set_yticks([])
            if l == 0:
                ax.set_title(f"head {h}", fontsize=8)
            if h == 0:
                ax.set_ylabel(f"layer {l}", fontsize=8)
    fig.suptitle("attention (row = query token, column = key token)", fontsize=10)
    fig.tight_layout()
    p1 = out / "attention_heads.png"
    fig.savefig(p1, dpi=90)
    plt.close(fig)

    rows = L + (1 if res.get("importance") is not None else 0)
    grid = np.vstack([res["cls_attention"]] + ([res["importance"][None]] if res.get("importance") is not None else []))
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * T + 2), 0.45 * rows + 1.5))
    ax.imshow(grid, cmap="magma", aspect="auto")
    ax.set_yticks(range(rows), [f"layer {l} [CLS]" for l in range(L)] + (["grad x input"] if rows > L else []), fontsize=8)
    if show_ticks:
        ax.set_xticks(range(T), tokens, rotation=90, fontsize=8)
    else:
        ax.set_xticks([])
    title = "first token's attention per layer (mean over heads)"
    if res.get("label") is not None:
        title += f"; predicted {res['label']}"
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    p2 = out / "cls_attention.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1, p2]


def _is_cjk(token: str) -> bool:
    return any("\u3000" <= ch <= "\u9fff" or "\uff00" <= ch <= "\uffef" for ch in token)


def highlight(res: dict[str, Any]) -> Any:
    """A rich ``Text`` of the tokens with a background as strong as their importance (or, without a
    classifier, the last layer's first-token attention)."""
    from rich.text import Text

    w = res["importance"] if res.get("importance") is not None else res["cls_attention"][-1]
    w = np.asarray(w, dtype=float)
    top = float(w.max()) or 1.0
    line = Text()
    for t, v in zip(res["tokens"], w):
        if t in ("[CLS]", "[SEP]", "[PAD]", "<s>", "</s>", "<pad>"):
            continue
        level = int(round(200 * v / top))
        piece = t[2:] if t.startswith("##") else (t if _is_cjk(t) or not line else " " + t)
        line.append(piece, style=f"black on rgb(255,{255 - level},{255 - level})" if level > 10 else "")
    return line
