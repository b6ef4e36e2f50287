"""Models with NeMo's public interface: `CTCModel` (ASR) and `ClassificationModel` (keyword spotting)."""

import os

from quartznet.checkpoint import load_checkpoint
from quartznet.models.base import QuartzNetModel
from quartznet.models.classification import ClassificationModel
from quartznet.models.ctc import CTCModel

__all__ = ["CTCModel", "ClassificationModel", "QuartzNetModel", "load_model"]


def load_model(path: str | os.PathLike) -> QuartzNetModel:
    """A `.nemo` or `.ckpt` as the model class its config names (CTC unless it says classification), in eval mode."""
    config, weights = load_checkpoint(path)
    target = str(config.get("target", ""))
    cls = ClassificationModel if target.endswith(ClassificationModel.nemo_target.rsplit(".", 1)[-1]) else CTCModel
    return cls.from_checkpoint_data(config, weights, path).eval()
