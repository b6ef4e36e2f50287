"""Models with NeMo's public interface: `CTCModel` (ASR) and `ClassificationModel` (keyword spotting)."""

from quartznet.models.base import QuartzNetModel
from quartznet.models.classification import ClassificationModel
from quartznet.models.ctc import CTCModel

__all__ = ["CTCModel", "ClassificationModel", "QuartzNetModel"]
