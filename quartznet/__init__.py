"""quartznet: NeMo-compatible QuartzNet / MatchboxNet training, evaluation and inference."""

__version__ = "0.1.0"
