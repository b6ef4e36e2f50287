"""QuartzNet for speech recognition: mel features -> conv encoder -> CTC head (NeMo's EncDecCTCModel)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from omegaconf import DictConfig

from quartznet.common.errors import ConfigError
from quartznet.common.metrics import ErrorCounts, corpus_errors
from quartznet.models.base import QuartzNetModel
from quartznet.network.heads import ctc_greedy_decode, ctc_loss, ctc_min_frames, is_character

TOO_SHORT = "transcript longer than the audio allows"  # the skip reason of such training rows


class CTCModel(QuartzNetModel):
    nemo_target = "nemo.collections.asr.models.ctc_models.EncDecCTCModel"
    EVAL_METRICS = ("loss", "wer", "cer")
    TRAIN_METRICS = ("loss",)

    def __init__(self, cfg: Mapping[str, Any] | DictConfig):
        super().__init__(cfg)
        self.preprocessor = self.build_preprocessor()
        self.encoder = self.build("encoder")
        self.fill_decoder_input()
        self.decoder = self.build("decoder")
        self.build_spec_augmentation()

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
        processed_signal, processed_signal_length, _ = self.features(
            input_signal, input_signal_length, processed_signal, processed_signal_length
        )
        processed_signal = self.augment(processed_signal, processed_signal_length)
        encoded, encoded_len = self.encoder(audio_signal=processed_signal, length=processed_signal_length)
        log_probs = self.decoder(encoder_output=encoded)
        return log_probs, encoded_len, log_probs.argmax(dim=-1)

    def decode(self, log_probs: torch.Tensor, encoded_len: torch.Tensor) -> list[str]:
        """Greedy CTC strings, one per utterance."""
        return ctc_greedy_decode(log_probs, encoded_len, self.vocabulary, self.blank_id)

    def per_utterance_outputs(self, input_signal: torch.Tensor, input_signal_length: torch.Tensor) -> list[torch.Tensor]:
        """(B, L) audio -> B log-prob tensors (T'_i, V+1), each cut to its valid frames."""
        log_probs, encoded_len, _ = self(input_signal=input_signal, input_signal_length=input_signal_length)
        return [log_probs[row, : int(encoded_len[row])] for row in range(log_probs.shape[0])]

    def change_vocabulary(self, new_vocabulary: Sequence[str]) -> None:
        """A new alphabet: the head is rebuilt (blank = len(new_vocabulary), last), the encoder is kept."""
        new_vocabulary = list(new_vocabulary)
        if len(set(new_vocabulary)) != len(new_vocabulary) or not all(is_character(c) for c in new_vocabulary):
            raise ConfigError(f"change_vocabulary: labels must be distinct single characters (a character CTC "
                              f"model's alphabet), got {new_vocabulary}")
        self.cfg.labels = new_vocabulary
        self.cfg.decoder.vocabulary = new_vocabulary
        self.cfg.decoder.num_classes = len(new_vocabulary)
        self.decoder = self.build("decoder").to(self.device)

    # --- Lightning ---------------------------------------------------------------------------------

    def ctc_step(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(loss, log-probs (B, T', V+1), encoded lengths (B,), frames each transcript needs (B,)).

        The loss averages the rows whose audio gives at least the frames their transcript needs
        (ctc_min_frames); the others could only give an infinite loss, which CTC would zero. With no such
        row it is a zero that still reaches every weight (DDP's gradient reduction needs all of them)."""
        log_probs, encoded_len, _ = self(input_signal=batch.audio, input_signal_length=batch.audio_len)
        needed = ctc_min_frames(batch.tokens, batch.tokens_len)
        feasible = encoded_len >= needed  # (B,)
        if bool(feasible.all()):
            loss = ctc_loss(log_probs, encoded_len, batch.tokens, batch.tokens_len, self.blank_id)
        elif bool(feasible.any()):
            loss = ctc_loss(log_probs[feasible], encoded_len[feasible], batch.tokens[feasible],
                            batch.tokens_len[feasible], self.blank_id)
        else:
            loss = log_probs.sum() * 0.0
        return loss, log_probs, encoded_len, needed

    def training_loss(self, batch: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[tuple[str, str]]]:
        loss, _, encoded_len, needed = self.ctc_step(batch)
        too_short = (encoded_len < needed).nonzero().squeeze(1).tolist()
        skipped = [(batch.paths[row], f"{TOO_SHORT} ({int(needed[row])} frames needed, the audio gives "
                                      f"{int(encoded_len[row])})") for row in too_short]
        return loss, {}, skipped

    def evaluation_counts(self, batch: Any) -> list[float]:
        """Loss summed over the rows it is defined for; every row is scored (a too-short one with what the
        model outputs for it, often nothing)."""
        loss, log_probs, encoded_len, needed = self.ctc_step(batch)
        in_loss = int((encoded_len >= needed).sum())
        errors = corpus_errors(self.token_texts(batch.tokens, batch.tokens_len), self.decode(log_probs, encoded_len))
        return [loss.item() * in_loss, in_loss, *errors.as_list()]

    def eval_metrics(self, totals: torch.Tensor) -> dict[str, float]:
        loss_sum, count, *counts = totals.tolist()
        errors = ErrorCounts(*(int(c) for c in counts))
        return {"loss": loss_sum / max(count, 1), "wer": errors.wer, "cer": errors.cer}

    def token_texts(self, tokens: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        return ["".join(self.vocabulary[i] for i in row[:n].tolist()) for row, n in zip(tokens, lengths)]
