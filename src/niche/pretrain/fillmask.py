"""Fill-mask with a masked-LM directory (e.g. one written by ``niche pretrain``).

Example:
    >>> from niche.pretrain import FillMask
    >>> fm = FillMask("runs/zh-bert")                                  # doctest: +SKIP
    >>> fm("我爱北京[MASK]安门", top_k=3)[0][0]["token"]                 # doctest: +SKIP
    '天'
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataError, ModelLoadError


class FillMask:
    """A masked LM and its tokenizer, loaded once (safetensors only, local dirs or hub names)."""

    def __init__(self, model: str | Path, device: str = "auto"):
        from ..encoders import pick_device
        from .loop import load_masked_lm

        p = Path(model)
        if p.exists() and not (p / "model.safetensors").is_file():
            raise ModelLoadError(f"{p}: no model.safetensors; niche loads safetensors weights only.")
        self.model, self.tokenizer, created = load_masked_lm(str(model))
        if created:
            raise ModelLoadError(
                f"{model}: has no masked-LM head (it is an encoder or a classifier), so it cannot fill masks. "
                f"Create one with `niche pretrain --base {model} --corpus TEXTS --out DIR`, then use DIR.")
        self.device = pick_device(device)
        self.model.to(self.device).eval()
        self.mask_token = self.tokenizer.mask_token

    def __call__(self, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """For each mask in ``text`` (left to right): the ``top_k`` tokens with their probabilities and
        the text with that mask filled."""
        return self.batch([text], top_k)[0]

    @torch.inference_mode()
    def batch(self, texts: Sequence[str], top_k: int = 5, batch_size: int = 32) -> list[list[list[dict[str, Any]]]]:
        tok = self.tokenizer
        if top_k < 1:
            raise DataError(f"top_k must be >= 1, got {top_k}.")
        limit = min(getattr(self.model.config, "max_position_embeddings", 512), tok.model_max_length or 10**9)
        out: list[list[list[dict[str, Any]]]] = []
        for s in range(0, len(texts), batch_size):
            chunk = list(texts[s: s + batch_size])
            for i, t in enumerate(chunk):
                if self.mask_token not in t:
                    raise DataError(f"text {s + i + 1} has no {self.mask_token} token: {t[:60]!r}. Write "
                                    f"{self.mask_token} where the missing token goes, e.g. '我爱北京{self.mask_token}安门'.")
            enc = tok(chunk, padding=True, return_tensors="pt", return_token_type_ids=False)
            if enc["input_ids"].shape[1] > limit:
                raise DataError(f"a text is {enc['input_ids'].shape[1]} tokens; this model reads at most {limit}. "
                                "Shorten the text around the mask.")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            logits = self.model(**enc).logits
            probs = torch.softmax(logits.float(), -1)
            for i in range(len(chunk)):
                ids = enc["input_ids"][i]
                positions = (ids == tok.mask_token_id).nonzero().flatten().tolist()
                masks = []
                for pos in positions:
                    p, idx = probs[i, pos].topk(min(top_k, probs.shape[-1]))
                    cands = []
                    for score, tid in zip(p.tolist(), idx.tolist()):
                        token = tok.convert_ids_to_tokens(tid)
                        filled = ids.clone()
                        filled[pos] = tid
                        seq = tok.decode(filled[enc["attention_mask"][i].bool()], skip_special_tokens=True)
                        cands.append({"token": token, "token_id": tid, "score": score, "sequence": _unspace(seq)})
                    masks.append(cands)
                out.append(masks)
        return out


def _unspace(s: str) -> str:
    """BERT's decoder puts spaces between CJK characters; remove those (not between Latin words)."""
    import re

    cjk = r"[\u3000-\u303f\u3400-\u4dbf\u4e00-\u9fff\uff00-\uffef]"
    return re.sub(rf"(?<={cjk}) (?={cjk})|(?<={cjk}) (?=\S)|(?<=\S) (?={cjk})", "", s)


def masked_probes(texts: Sequence[str], mask_token: str, seed: int = 0,
                  max_chars: int = 120) -> tuple[list[str], list[str], int]:
    """Mask one CJK character of each text at a seeded position, cutting the text to ``max_chars``
    around it. Returns (probes, answers, texts skipped for having no CJK character)."""
    import re

    rng = np.random.default_rng(seed)
    probes, answers = [], []
    for t in texts:
        spots = [m.start() for m in re.finditer(r"[\u4e00-\u9fff]", t)]
        if not spots:
            continue
        pos = int(spots[rng.integers(len(spots))])
        a = max(0, pos - max_chars // 2)
        window = t[a: a + max_chars]
        pos -= a
        probes.append(window[:pos] + mask_token + window[pos + 1:])
        answers.append(window[pos])
    return probes, answers, len(texts) - len(probes)


def topk_accuracy(fm: FillMask, texts: Sequence[str], k: int = 5, seed: int = 0, max_chars: int = 120,
                  batch_size: int = 64) -> dict[str, Any]:
    """Mask one CJK character of each text (:func:`masked_probes`) and count how often the right
    character is among the top ``k``."""
    limit = min(getattr(fm.model.config, "max_position_embeddings", 512), fm.tokenizer.model_max_length or 10**9)
    max_chars = min(max_chars, limit - 2)  # a token covers at least one character
    probes, answers, skipped = masked_probes(texts, fm.mask_token, seed, max_chars)
    hits1 = hitsk = 0
    results = fm.batch(probes, top_k=k, batch_size=batch_size)
    for ans, res in zip(answers, results):
        toks = [c["token"] for c in res[0]]
        hits1 += toks[0] == ans
        hitsk += ans in toks
    n = len(probes)
    return {"n": n, "k": k, "top1": hits1 / max(n, 1), f"top{k}": hitsk / max(n, 1), "skipped_no_cjk": skipped}
