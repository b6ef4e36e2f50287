"""Output heads: a CTC head over characters and a classification head over labels."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from quartznet.common.errors import ConfigError
from quartznet.network.encoder import xavier_init

# QuartzNet's English alphabet (docs/nemo_compatibility.md §1); the CTC blank comes after it, at index
# len(LABELS).
LABELS = [" ", *"abcdefghijklmnopqrstuvwxyz", "'"]


def is_character(label: object) -> bool:
    """A CTC label of a character model: a string of one character."""
    return isinstance(label, str) and len(label) == 1


class ConvASRDecoder(nn.Module):
    """1x1 conv to len(vocabulary) + 1 classes, log-softmax; blank is the last index. Key: `decoder_layers.0`."""

    def __init__(
        self,
        feat_in: int,
        num_classes: int = -1,
        vocabulary: Sequence[str] | None = None,
        init_mode: str = "xavier_uniform",
        add_blank: bool = True,
    ):
        super().__init__()
        if vocabulary is None:
            raise ConfigError("decoder.vocabulary is required (the output labels, without the blank)")
        if num_classes > 0 and num_classes != len(vocabulary):
            raise ConfigError(
                f"decoder.num_classes={num_classes} but decoder.vocabulary has {len(vocabulary)} labels"
            )
        if init_mode != "xavier_uniform" or not add_blank:
            raise ConfigError("ConvASRDecoder supports init_mode='xavier_uniform' with add_blank=true only")
        if not all(is_character(label) for label in vocabulary):
            raise ConfigError(f"decoder.vocabulary: labels must be single characters (a character CTC model's "
                              f"alphabet), got {[label for label in vocabulary if not is_character(label)]}")
        self.vocabulary = list(vocabulary)
        self.blank_id = len(self.vocabulary)
        self.decoder_layers = nn.Sequential(nn.Conv1d(feat_in, self.blank_id + 1, kernel_size=1, bias=True))
        self.apply(xavier_init)

    @property
    def num_classes_with_blank(self) -> int:
        return self.blank_id + 1

    def forward(self, encoder_output: torch.Tensor) -> torch.Tensor:
        """(B, C, T) encodings -> (B, T, V + 1) log-probabilities."""
        # The 1x1 conv as a matrix product over frames: the encoder's (B, C, T) output is a (B, T, C)
        # tensor in memory (channels-last blocks), which Conv1d copies and runs ~3x slower (forward +
        # backward, docs/benchmarks.md, "CPU kernels"); the weights and the sums are the conv's.
        conv = self.decoder_layers[0]
        logits = nn.functional.linear(encoder_output.transpose(1, 2), conv.weight.squeeze(2), conv.bias)  # (B, T, V+1)
        return torch.log_softmax(logits.float(), dim=-1)


def ctc_token_runs(best: torch.Tensor, blank_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The CTC rule (docs/nemo_compatibility.md §1) on one best path: (T,) frame ids -> (tokens, first
    frames, end frames) of each run of one non-blank id. A repeated id with no blank between is one token.
    T = 0 gives three empty tensors."""
    new_run = torch.ones_like(best, dtype=torch.bool)
    new_run[1:] = best[1:] != best[:-1]
    starts = new_run.nonzero().squeeze(1)
    # Each run ends where the next begins; the last at T. No frames (audio shorter than one encoder
    # stride): no runs.
    ends = torch.cat([starts[1:], starts.new_tensor([best.numel()])]) if starts.numel() else starts
    tokens = best[starts]
    keep = tokens != blank_id
    return tokens[keep], starts[keep], ends[keep]


Decode = Callable[[torch.Tensor, torch.Tensor], list[str]]  # (B, T', V+1) log-probs, (B,) lengths -> texts


def ctc_greedy_ids(log_probs: torch.Tensor, lengths: torch.Tensor, blank_id: int) -> list[list[int]]:
    """Best path per utterance: argmax per valid frame, then the CTC rule (ctc_token_runs)."""
    best = log_probs.argmax(dim=-1).cpu()  # (B, T)
    return [ctc_token_runs(row[:n], blank_id)[0].tolist() for row, n in zip(best, lengths.tolist())]


def ctc_greedy_decode(
    log_probs: torch.Tensor, lengths: torch.Tensor, vocabulary: Sequence[str], blank_id: int
) -> list[str]:
    """(B, T, V + 1) log-probs and (B,) lengths -> B strings."""
    return ["".join(vocabulary[i] for i in ids) for ids in ctc_greedy_ids(log_probs, lengths, blank_id)]


class ConvASRDecoderClassification(nn.Module):
    """Average over time (unmasked, as NeMo) -> Linear(feat_in, num_classes). Key: `decoder_layers.0`."""

    def __init__(
        self,
        feat_in: int,
        num_classes: int,
        init_mode: str = "xavier_uniform",
        return_logits: bool = True,
        pooling_type: str = "avg",
    ):
        super().__init__()
        if init_mode != "xavier_uniform" or pooling_type != "avg" or not return_logits:
            raise ConfigError(
                "ConvASRDecoderClassification supports init_mode='xavier_uniform', pooling_type='avg', "
                "return_logits=true only"
            )
        self.num_classes = num_classes
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.decoder_layers = nn.Sequential(nn.Linear(feat_in, num_classes, bias=True))
        self.apply(xavier_init)

    def forward(self, encoder_output: torch.Tensor) -> torch.Tensor:
        """(B, C, T) encodings -> (B, num_classes) logits."""
        return self.decoder_layers(self.pooling(encoder_output).squeeze(-1))


def ctc_min_frames(targets: torch.Tensor, target_len: torch.Tensor) -> torch.Tensor:
    """(B,) the fewest frames a CTC alignment of each (B, U_max) target needs: one per symbol, plus one
    blank between each pair of equal neighbours ("ll" in "hello" cannot be two frames of "l")."""
    positions = torch.arange(1, targets.shape[1], device=targets.device)  # (U_max - 1,)
    repeats = (targets[:, 1:] == targets[:, :-1]) & (positions < target_len[:, None])  # (B, U_max - 1)
    return target_len + repeats.sum(1)


def ctc_loss(
    log_probs: torch.Tensor,
    encoded_len: torch.Tensor,
    targets: torch.Tensor,
    target_len: torch.Tensor,
    blank_id: int,
) -> torch.Tensor:
    """NeMo's CTC loss (docs/nemo_compatibility.md §1): per-utterance negative log-likelihood averaged
    over the batch ("mean_batch", not divided by target length), infinities zeroed, always computed
    in fp32. Training leaves out rows too short for their targets first (ctc_min_frames), so that
    zeroing hides nothing there."""
    with torch.autocast(log_probs.device.type, enabled=False):
        per_utterance = nn.functional.ctc_loss(
            log_probs.float().transpose(0, 1),  # (T, B, V + 1)
            targets, encoded_len, target_len,
            blank=blank_id, reduction="none", zero_infinity=True,
        )
    return per_utterance.mean()
