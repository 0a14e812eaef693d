"""Training: one shared loop for the VQ-VAE and every prior, DDP from torchrun, resumable checkpoints.

Entry points: :func:`train_vqvae` and :func:`train_prior` (behind ``jukebox train``); the loop itself is
:class:`Trainer` driven by a :class:`Task` (:class:`VQVAETask`, :class:`PriorTask`).
"""

from .config import TrainConfig
from .distributed import DistInfo, cleanup_distributed, setup_distributed
from .finetune import extend_prior_labels, extend_vocab
from .loop import Task, Trainer, TrainingDiverged, TrainResult
from .optim import ModelEMA, build_optimizer, lr_at
from .options import TrainOptions
from .runner import load_corpus, new_prior_config, train_prior, train_vqvae
from .state import CheckpointState, load_checkpoint, save_checkpoint
from .tasks import PriorTask, VQVAETask, estimate_bandwidth

__all__ = [
    "CheckpointState", "DistInfo", "ModelEMA", "PriorTask", "Task", "TrainConfig", "TrainResult", "Trainer",
    "TrainOptions", "TrainingDiverged", "VQVAETask", "build_optimizer", "cleanup_distributed", "estimate_bandwidth",
    "extend_prior_labels", "extend_vocab", "load_checkpoint", "load_corpus", "lr_at", "new_prior_config",
    "save_checkpoint", "setup_distributed", "train_prior", "train_vqvae",
]
