"""Long recordings in bounded memory: the encoder's log-probs of a file of any length, equal to whole-file
inference away from window borders, holding only one audio block, one feature piece and one batch of
windows at a time.

Per-feature normalisation needs statistics of the whole file, so the audio is streamed twice:

  pass 1  audio blocks -> log-mel pieces (without normalisation) -> running mean / variance only
  pass 2  audio blocks -> log-mel pieces, normalised with the pass-1 statistics -> overlapping windows
          of `chunk_seconds` plus `overlap_seconds` of context on each side -> encoder, `batch_size`
          windows at a time -> each window's central output frames

Each log-mel piece is computed with enough audio on both sides that its frames equal the whole-file
frames, so the only difference to whole-file inference is the encoder's limited view at window borders
(its receptive field reaches past the context). Only the (T', V+1) log-probs grow with the file:
29 floats per 20 ms, about 3.5 MB per 10 minutes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from quartznet.common.errors import InputError
from quartznet.data.audio import RollingBuffer
from quartznet.network.features import FeatureStatistics, FilterbankFeatures

if TYPE_CHECKING:
    from quartznet.models import CTCModel

AudioBlocks = Callable[[], Iterable[torch.Tensor]]  # starts a new stream of (n,) sample blocks


def feature_pieces(featurizer: FilterbankFeatures, blocks: Iterable[torch.Tensor], piece_frames: int) -> Iterator[torch.Tensor]:
    """(F, n) un-normalised log-mel frames of the recording `blocks` make up, in order, `piece_frames` at a
    time: together exactly the frames the featurizer gives for the whole recording at once.

    A piece is computed from its own samples plus `context` hops on each side: a frame that far inside
    never sees the piece's edge padding, and pre-emphasis only differs on the piece's first sample.
    """
    hop = featurizer.hop_length
    context = math.ceil((featurizer.n_fft // 2 + 1) / hop) + 1
    device = featurizer.window.device
    samples = RollingBuffer((block.float().cpu() for block in blocks), torch.zeros(0))
    start = 0  # next frame to produce
    while True:
        samples.fill_to((start + piece_frames + context) * hop)
        stop = start + piece_frames
        if samples.ended:
            stop = min(stop, int(featurizer.frame_lengths(torch.tensor([samples.end])).item()))
        if start >= stop:
            return
        left = min(context, start)
        piece = samples.slice((start - left) * hop, min(samples.end, (stop + context) * hop)).to(device).unsqueeze(0)
        features, _ = featurizer(piece, torch.tensor([piece.shape[1]], device=device), normalize=False)
        yield features[0, :, left : left + stop - start]
        start = stop
        samples.drop_before(max(0, (start - context) * hop))


def normalized_feature_pieces(featurizer: FilterbankFeatures, blocks: AudioBlocks, piece_frames: int) -> Iterator[torch.Tensor]:
    """feature_pieces normalised as the featurizer normalises a whole recording: a statistics pass over
    the stream, then the pieces of a second stream."""
    if not featurizer.normalize:
        yield from feature_pieces(featurizer, blocks(), piece_frames)
        return
    statistics = FeatureStatistics(featurizer.normalize)
    for piece in feature_pieces(featurizer, blocks(), piece_frames):
        statistics.update(piece)
    for piece in feature_pieces(featurizer, blocks(), piece_frames):
        yield statistics.normalize(piece)


@dataclass(frozen=True)
class Window:
    """One encoder window: `frames` (F, n) from `span_start`, whose central part starts at `start`."""

    start: int
    span_start: int
    frames: torch.Tensor
    last: bool  # the recording's final window: keep its output to the end


def feature_windows(pieces: Iterable[torch.Tensor], n_features: int, central: int, context: int) -> Iterator[Window]:
    """Windows of `central` frames with up to `context` frames on each side, over a stream of (F, n) pieces."""
    frames = RollingBuffer((piece.cpu() for piece in pieces), torch.zeros(n_features, 0))
    start = 0  # next window's first central frame
    while True:
        frames.fill_to(start + central + context)
        total = frames.end  # all frames once the stream ended, else what is buffered
        if start >= total:
            return
        span_start, span_stop = max(0, start - context), min(total, start + central + context)
        last = frames.ended and start + central >= total
        yield Window(start, span_start, frames.slice(span_start, span_stop), last)
        start += central
        frames.drop_before(max(0, start - context))


def encode_windows(model: CTCModel, windows: list[Window], central: int) -> list[torch.Tensor]:
    """Each window's central (T'_i, V+1) log-probs, the windows run as one padded batch."""
    stride = model.encoder.total_stride
    device = next(model.parameters()).device
    width = max(window.frames.shape[1] for window in windows)
    batch = torch.zeros(len(windows), windows[0].frames.shape[0], width, device=device)  # (B, F, T)
    for row, window in enumerate(windows):
        batch[row, :, : window.frames.shape[1]] = window.frames
    lengths = torch.tensor([window.frames.shape[1] for window in windows], device=device)
    log_probs, encoded_len, _ = model(processed_signal=batch, processed_signal_length=lengths)
    kept = []
    for row, window in enumerate(windows):
        begin = (window.start - window.span_start) // stride
        end = int(encoded_len[row]) if window.last else begin + central // stride
        kept.append(log_probs[row, begin:end].cpu())
    return kept


def chunked_log_probs(
    model: CTCModel,
    audio: torch.Tensor | AudioBlocks,
    chunk_seconds: float,
    overlap_seconds: float,
    batch_size: int,
    advance: Callable[[float], object] | None = None,
) -> torch.Tensor:
    """(T', V+1) log-probs of a long recording: a (L,) waveform, or a function that starts a stream of its
    blocks (e.g. `lambda: stream_audio(path)`); windows of `chunk_seconds` with `overlap_seconds` of
    context on each side, `batch_size` windows at a time, central frames kept. `advance` (e.g. a tqdm
    bar's update) is called with the seconds of audio each batch of windows covered."""
    preprocessor = model.preprocessor
    featurizer = preprocessor.featurizer
    if not isinstance(featurizer, FilterbankFeatures):
        raise InputError("chunked transcription needs the mel front end (AudioToMelSpectrogramPreprocessor)")
    stride = model.encoder.total_stride
    frames_per_second = preprocessor.sample_rate / preprocessor.hop_length
    # Window edges on whole output frames, so each window's output frames line up with the file's.
    central = max(stride, round(chunk_seconds * frames_per_second / stride) * stride)
    context = round(overlap_seconds * frames_per_second / stride) * stride
    if isinstance(audio, torch.Tensor):
        waveform = audio
        audio = lambda: waveform.split(central * preprocessor.hop_length)  # noqa: E731
    pieces = normalized_feature_pieces(featurizer, audio, piece_frames=central)
    windows = feature_windows(pieces, preprocessor.n_features, central, context)
    kept: list[torch.Tensor] = []
    while batch := [window for _, window in zip(range(batch_size), windows)]:
        outputs = encode_windows(model, batch, central)
        kept.extend(outputs)
        if advance is not None:
            advance(sum(output.shape[0] for output in outputs) * stride / frames_per_second)
    return torch.cat(kept)
