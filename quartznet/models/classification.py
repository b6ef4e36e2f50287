"""QuartzNet / MatchboxNet for keyword spotting: MFCC -> crop-or-pad -> conv encoder -> pooled linear head
(NeMo's EncDecClassificationModel)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.models.base import QuartzNetModel, full_lengths
from quartznet.network.features import crop_or_pad_frames


class ClassificationModel(QuartzNetModel):
    nemo_target = "nemo.collections.asr.models.classification_models.EncDecClassificationModel"
    EVAL_METRICS = ("loss", "acc")
    TRAIN_METRICS = ("loss", "acc")

    def __init__(self, cfg: Mapping[str, Any] | DictConfig):
        super().__init__(cfg)
        if not self.cfg.get("labels"):
            raise ConfigError("model config: `labels` (the class names) is required")
        self.preprocessor = self.build_preprocessor()
        self.encoder = self.build("encoder")
        self.fill_decoder_input()
        self.cfg.decoder.num_classes = len(self.labels)  # as NeMo: the labels decide the head size
        self.decoder = self.build("decoder")
        self.build_spec_augmentation()
        # NeMo's `crop_or_pad_augment`: every utterance becomes exactly `audio_length` frames (<= 0: off).
        crop_or_pad = self.cfg.get("crop_or_pad_augment") or {}
        self.fixed_frames = max(int(crop_or_pad.get("audio_length", 0)), 0)

    @property
    def labels(self) -> list[str]:
        return list(self.cfg.labels)

    def forward(
        self,
        input_signal: torch.Tensor | None = None,
        input_signal_length: torch.Tensor | None = None,
        processed_signal: torch.Tensor | None = None,
        processed_signal_length: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(B, L) 16 kHz audio or (B, F, T) features -> (B, num_classes) logits."""
        processed_signal, processed_signal_length, audio_lengths = self.features(
            input_signal, input_signal_length, processed_signal, processed_signal_length
        )
        if self.fixed_frames:
            valid_frames = processed_signal_length
            if audio_lengths is not None:
                # NeMo's MFCC length is ceil(L / hop); the STFT has L // hop + 1 frames of the utterance.
                valid_frames = self.preprocessor.content_frames(audio_lengths)
            processed_signal = crop_or_pad_frames(
                processed_signal, valid_frames, self.fixed_frames, random_crop=self.training
            )
            processed_signal_length = full_lengths(processed_signal)
        processed_signal = self.augment(processed_signal, processed_signal_length)
        encoded, _ = self.encoder(audio_signal=processed_signal, length=processed_signal_length)
        return self.decoder(encoder_output=encoded)

    def per_utterance_outputs(self, input_signal: torch.Tensor, input_signal_length: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) audio -> B logit vectors (num_classes,)."""
        return list(self(input_signal=input_signal, input_signal_length=input_signal_length))

    def change_labels(self, new_labels: Sequence[str]) -> None:
        """A new class list: the linear head is rebuilt for it, the encoder is kept."""
        new_labels = list(new_labels)
        if len(set(new_labels)) != len(new_labels):
            raise ConfigError(f"change_labels: labels must be distinct, got {new_labels}")
        self.cfg.labels = new_labels
        self.cfg.decoder.num_classes = len(new_labels)
        self.decoder = self.build("decoder").to(self.device)

    # --- Lightning ---------------------------------------------------------------------------------

    def training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, str]]]:
        logits = self(input_signal=batch.audio, input_signal_length=batch.audio_len)
        loss = nn.functional.cross_entropy(logits.float(), batch.labels)
        return loss, {"acc": (logits.argmax(-1) == batch.labels).float().mean()}, []

    def evaluation_counts(self, batch: Any) -> list[float]:
        logits = self(input_signal=batch.audio, input_signal_length=batch.audio_len)
        loss = nn.functional.cross_entropy(logits.float(), batch.labels, reduction="sum")
        correct = (logits.argmax(-1) == batch.labels).sum()
        return [loss.item(), batch.audio.shape[0], correct.item()]

    def eval_metrics(self, totals: torch.Tensor) -> dict[str, float]:
        loss_sum, count, correct = totals.tolist()
        return {"loss": loss_sum / max(count, 1), "acc": correct / max(count, 1)}
