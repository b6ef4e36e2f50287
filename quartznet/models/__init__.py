"""Models with NeMo's public interface: `CTCModel` (ASR) and `ClassificationModel` (keyword spotting).
Loading a checkpoint as whichever model it holds: quartznet.tasks.load_model."""

from quartznet.models.base import QuartzNetModel
from quartznet.models.classification import ClassificationModel
from quartznet.models.ctc import CTCModel

__all__ = ["CTCModel", "ClassificationModel", "QuartzNetModel"]
