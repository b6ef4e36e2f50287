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
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch

from quartznet.features import FeatureStatistics, FilterbankFeatures
from quartznet.models import CTCModel

AudioBlocks = Callable[[], Iterable[torch.Tensor]]  # starts a new stream of (n,) sample blocks


def encoder_stride(model: CTCModel) -> int:
    """Feature frames per output frame (2 for QuartzNet: only the first block has stride 2)."""
    strides = (block.get("stride", 1) for block in model.cfg.encoder.jasper)
    return math.prod(int(s[0] if isinstance(s, Sequence) else s) for s in strides)


def feature_pieces(featurizer: FilterbankFeatures, blocks: Iterable[torch.Tensor], piece_frames: int) -> Iterator[torch.Tensor]:
    """(F, n) un-normalised log-mel frames of the recording `blocks` make up, in order, `piece_frames` at a
    time: together exactly the frames the featurizer gives for the whole recording at once.

    A piece is computed from its own samples plus `context` hops on each side: a frame that far inside
    never sees the piece's edge padding, and pre-emphasis only differs on the piece's first sample.
    """
    hop = featurizer.hop_length
    context = math.ceil((featurizer.n_fft // 2 + 1) / hop) + 1
    device = featurizer.fb.device
    stream = iter(blocks)
    buffer, buffer_start = torch.zeros(0), 0  # samples [buffer_start, buffer_start + len)
    start, ended = 0, False  # next frame to produce; whether the stream is exhausted
    while True:
        while not ended and buffer_start + buffer.numel() < (start + piece_frames + context) * hop:
            block = next(stream, None)
            ended = block is None
            if block is not None:
                buffer = torch.cat([buffer, block.float().cpu()])
        samples_end = buffer_start + buffer.numel()
        stop = start + piece_frames
        if ended:
            stop = min(stop, int(featurizer.frame_lengths(torch.tensor([samples_end])).item()))
        if start >= stop:
            return
        left = min(context, start)
        first, last = (start - left) * hop, min(samples_end, (stop + context) * hop)
        piece = buffer[first - buffer_start : last - buffer_start].to(device).unsqueeze(0)
        features, _ = featurizer(piece, torch.tensor([piece.shape[1]], device=device), normalize=False)
        yield features[0, :, left : left + stop - start]
        start = stop
        keep_from = max(0, (start - context) * hop)
        buffer, buffer_start = buffer[keep_from - buffer_start :], keep_from


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
    featurizer = model.preprocessor.featurizer
    if not isinstance(featurizer, FilterbankFeatures):
        raise ValueError("chunked transcription needs the mel front end (AudioToMelSpectrogramPreprocessor)")
    stride = encoder_stride(model)
    frames_per_second = model.preprocessor.sample_rate / featurizer.hop_length
    # Window edges on whole output frames, so each window's output frames line up with the file's.
    central = max(stride, round(chunk_seconds * frames_per_second / stride) * stride)
    context = round(overlap_seconds * frames_per_second / stride) * stride
    if isinstance(audio, torch.Tensor):
        waveform = audio
        audio = lambda: waveform.split(central * featurizer.hop_length)  # noqa: E731
    device = featurizer.fb.device
    kept: list[torch.Tensor] = []
    windows: list[tuple[int, int, torch.Tensor, bool]] = []  # (window start, span start, frames, last)

    def run_windows() -> None:
        width = max(frames.shape[1] for _, _, frames, _ in windows)
        batch = torch.zeros(len(windows), featurizer.fb.shape[1], width, device=device)  # (B, F, T)
        for row, (_, _, frames, _) in enumerate(windows):
            batch[row, :, : frames.shape[1]] = frames
        lengths = torch.tensor([frames.shape[1] for _, _, frames, _ in windows], device=device)
        log_probs, encoded_len, _ = model(processed_signal=batch, processed_signal_length=lengths)
        output_frames = 0
        for row, (start, span_start, _, last) in enumerate(windows):
            begin = (start - span_start) // stride
            end = int(encoded_len[row]) if last else begin + central // stride
            kept.append(log_probs[row, begin:end].cpu())
            output_frames += end - begin
        if advance is not None:
            advance(output_frames * stride / frames_per_second)
        windows.clear()

    buffer, buffer_start = torch.zeros(featurizer.fb.shape[1], 0), 0  # normalised frames [buffer_start, ...)
    start = 0  # next window's first central frame
    pieces = normalized_feature_pieces(featurizer, audio, piece_frames=central)
    ended = False
    while True:
        while not ended and buffer_start + buffer.shape[1] < start + central + context:
            piece = next(pieces, None)
            ended = piece is None
            if piece is not None:
                buffer = torch.cat([buffer, piece.cpu()], dim=1)
        total = buffer_start + buffer.shape[1]  # all frames once ended, else what is buffered
        if start >= total:
            break
        span_start, span_stop = max(0, start - context), min(total, start + central + context)
        last = ended and start + central >= total
        windows.append((start, span_start, buffer[:, span_start - buffer_start : span_stop - buffer_start], last))
        if len(windows) == batch_size:
            run_windows()
        start += central
        keep_from = max(0, start - context)
        buffer, buffer_start = buffer[:, keep_from - buffer_start :], keep_from
    if windows:
        run_windows()
    return torch.cat(kept)
