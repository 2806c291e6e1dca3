"""Training stage: distil teacher labels into a student (``DistillationTrainer``).

``DistillationTrainer(dataset_path, TrainConfig, run_dir).fit()`` writes a run directory
(``config.yaml``, ``normalization.json``, ``checkpoints/best.pt``, ``checkpoints/last.pt``,
``metrics.csv``, ``parity.png``); see :mod:`mlff_distiller.training.trainer`.
"""

from .config import TrainConfig
from .trainer import DistillationTrainer, TrainingDivergedError, load_train_config

__all__ = ["TrainConfig", "DistillationTrainer", "TrainingDivergedError", "load_train_config"]
