"""QuartzNet for speech recognition: mel features -> conv encoder -> CTC head (NeMo's EncDecCTCModel)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from omegaconf import DictConfig

from quartznet.features import AudioToMelSpectrogramPreprocessor
from quartznet.heads import ctc_greedy_decode
from quartznet.models.base import QuartzNetModel, full_lengths, resolve_mel_variant


class CTCModel(QuartzNetModel):
    nemo_target = "nemo.collections.asr.models.ctc_models.EncDecCTCModel"

    def __init__(self, cfg: Mapping[str, Any] | DictConfig):
        super().__init__(cfg)
        extra = {}
        if self.section("preprocessor")[0] is AudioToMelSpectrogramPreprocessor:
            self.cfg.mel_variant = resolve_mel_variant(self.cfg)
            extra["variant"] = self.cfg.mel_variant
        self.preprocessor = self.build("preprocessor", **extra)
        self.encoder = self.build("encoder")
        self.fill_decoder_input()
        self.decoder = self.build("decoder")

    @property
    def vocabulary(self) -> list[str]:
        return self.decoder.vocabulary

    @property
    def blank_id(self) -> int:
        return self.decoder.blank_id

    def forward(
        self,
        input_signal: torch.Tensor | None = None,
        input_signal_length: torch.Tensor | None = None,
        processed_signal: torch.Tensor | None = None,
        processed_signal_length: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, L) 16 kHz audio or (B, F, T) features -> log-probs (B, T', V+1), lengths (B,), argmax (B, T')."""
        if processed_signal is None:
            if input_signal is None:
                raise ValueError("give input_signal (audio) or processed_signal (features)")
            if input_signal_length is None:
                input_signal_length = full_lengths(input_signal)
            processed_signal, processed_signal_length = self.preprocessor(
                input_signal=input_signal, length=input_signal_length
            )
        elif processed_signal_length is None:
            processed_signal_length = full_lengths(processed_signal)
        encoded, encoded_len = self.encoder(audio_signal=processed_signal, length=processed_signal_length)
        log_probs = self.decoder(encoder_output=encoded)
        return log_probs, encoded_len, log_probs.argmax(dim=-1)

    def decode(self, log_probs: torch.Tensor, encoded_len: torch.Tensor) -> list[str]:
        """Greedy CTC strings, one per utterance."""
        return ctc_greedy_decode(log_probs, encoded_len, self.vocabulary, self.blank_id)
