"""Shared fixtures: a tiny random BERT built from a config (no network, seconds on CPU) and
small toy datasets."""

from __future__ import annotations

import csv
import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if "NICHE_CACHE" not in os.environ:  # the static family's token-vector cache: not the user's home
    import tempfile

    os.environ["NICHE_CACHE"] = tempfile.mkdtemp(prefix="niche-test-cache-")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"

POS = ["good", "great", "excellent", "love", "wonderful", "happy", "fine", "best"]
NEG = ["bad", "awful", "terrible", "hate", "poor", "sad", "worst", "broken"]
FILLER = ["the", "movie", "service", "food", "was", "really", "quite", "and", "a", "this", "is", "it", "very"]


def toy_texts(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """A learnable two-class toy task: the sentiment word decides the label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for i in range(n):
        lab = "pos" if i % 2 == 0 else "neg"
        words = rng.choices(FILLER, k=rng.randint(2, 9))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POS if lab == "pos" else NEG))
        texts.append(" ".join(words))
        labels.append(lab)
    return texts, labels


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(base: str, timeout: float = 120) -> None:
    """Poll ``{base}/readyz`` until a ``niche serve`` subprocess has loaded its models; fail (rather
    than let the caller hit a refused connection) if it does not within ``timeout`` seconds."""
    import time

    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{base}/readyz did not answer 200 within {timeout:.0f} s (server start-up too slow or failed)")


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 32-wide random BERT with a WordPiece vocab over the toy words, saved as a
    standard Hugging Face directory (config.json, model.safetensors, tokenizer files)."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"))


def build_tiny_bert(d: Path, **config: object) -> Path:
    """Write the tiny BERT of the ``tiny_bert`` fixture into ``d``; ``config`` overrides BertConfig fields."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,!?'")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + POS + NEG + FILLER + letters + [f"##{c}" for c in letters]
    tok = BertTokenizer(vocab={w: i for i, w in enumerate(dict.fromkeys(vocab))}, do_lower_case=True)
    torch.manual_seed(0)
    cfg = BertConfig(**{"vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                        "intermediate_size": 64, "max_position_embeddings": 128} | config)
    BertModel(cfg).save_pretrained(str(d), safe_serialization=True)
    tok.save_pretrained(str(d))
    return d


@pytest.fixture
def toy_csv(tmp_path: Path) -> tuple[Path, Path]:
    tr_t, tr_y = toy_texts(160, seed=1)
    dv_t, dv_y = toy_texts(40, seed=2)
    return (write_csv(tmp_path / "train.csv", list(zip(tr_t, tr_y))),
            write_csv(tmp_path / "dev.csv", list(zip(dv_t, dv_y))))


# transformer settings that make the tiny model learn the toy task in seconds
TINY = dict(max_len=32, epochs=6, batch_size=16, lr=2e-3, head_lr_mult=1.0, warmup_ratio=0.0, patience=0,
            eval_batch_size=32)
