"""Training stage: distil teacher labels into a student (``DistillationTrainer``).

``DistillationTrainer(dataset_path, TrainConfig, run_dir).fit()`` writes a run directory
(``config.yaml``, ``normalization.json``, ``checkpoints/best.pt``, ``checkpoints/last.pt``,
``metrics.csv``, ``parity.png``); see :mod:`mlff_distiller.training.trainer`.

The names below are imported on first use: reading a recipe's ``training`` section
(:class:`TrainConfig`) does not import torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "TrainConfig": "config",
    "DistillationTrainer": "trainer",
    "TrainingDivergedError": "trainer",
    "load_train_config": "trainer",
}

__all__ = ["TrainConfig", "DistillationTrainer", "TrainingDivergedError", "load_train_config"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
