"""Training: the fine-tuning loop and what every niche training run shares.

- :mod:`~niche.train.loop` — the explicit fine-tuning loop (AdamW, warm-up + linear decay, clipping,
  length-grouped batches, dev early stopping, DDP, gradient accumulation);
- :mod:`~niche.train.checkpoint` — resumable checkpoints and the one resume-or-refuse policy, used by
  fine-tuning and by masked-LM pretraining (:mod:`niche.pretrain`);
- :mod:`~niche.train.optim` — parameter groups and mixed precision;
- :mod:`~niche.train.losses` — cross-entropy, distillation and masked-LM losses, passed to the loops;
- :mod:`~niche.train.distributed` — torchrun / accelerate process groups.
"""

from .checkpoint import fingerprint, latest_checkpoint, resume_or_refuse
from .loop import TrainState, batch_order, train_classifier
from .losses import CrossEntropy, Distillation, MaskedLM, class_weights

__all__ = ["TrainState", "train_classifier", "batch_order", "fingerprint", "latest_checkpoint", "resume_or_refuse",
           "CrossEntropy", "Distillation", "MaskedLM", "class_weights"]
