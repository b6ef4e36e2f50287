"""A dilated depthwise conv on CPU: oneDNN's dilated kernel against the same conv as an undilated kernel
with zeros between its taps (`quartznet.network.blocks.spread_taps`, what MaskedConv1d runs on CPU).

    .venv/bin/python bench/bench_dilated_conv.py [--threads 2] [--runs 10]

Shapes: QuartzNet's C2 (kernel 29 in the demo models, 87 in 15x5; dilation 2), channels-last (B, C, 1, T)
as the blocks compute. Forward alone (inference) and forward + backward (training); median of `--runs`
after 3 warm-up runs. The two give the same outputs and gradients (checked here and in tests/test_models.py).
"""

from __future__ import annotations

import argparse

import torch
from bench_model import median_seconds  # bench/ is on sys.path when this file runs

from quartznet.network.blocks import spread_taps

# (name, batch, channels, frames, kernel)
SHAPES = [
    ("demo model C2, batch 8 x ~2.4 s", 8, 192, 120, 29),
    ("quartznet_small C2, batch 16 x 6 s", 16, 256, 300, 29),
    ("15x5 C2, batch 1 x 10 s", 1, 512, 500, 87),
    ("15x5 C2, batch 4 x 12 s", 4, 512, 600, 87),
]
DILATION = 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print("| conv | forward: dilated / spread | forward + backward: dilated / spread |")
    print("|---|---|---|")
    for name, batch, channels, frames, kernel in SHAPES:
        x = torch.randn(batch, channels, 1, frames).contiguous(memory_format=torch.channels_last).requires_grad_()
        weight = torch.randn(channels, 1, 1, kernel, requires_grad=True)
        padding = (0, DILATION * (kernel - 1) // 2)

        def dilated():
            return torch.nn.functional.conv2d(x, weight, padding=padding, dilation=(1, DILATION), groups=channels)

        def spread():
            return torch.nn.functional.conv2d(x, spread_taps(weight, DILATION), padding=padding, groups=channels)

        torch.testing.assert_close(spread(), dilated(), atol=1e-4, rtol=1e-5)
        timings = []
        for conv in (dilated, spread):
            with torch.no_grad():
                forward, _ = median_seconds(conv, 3, args.runs)
            both, _ = median_seconds(lambda: torch.autograd.grad(conv().square().sum(), (x, weight)), 3, args.runs)
            timings.append((forward * 1000, both * 1000))
        (fd, bd), (fs, bs) = timings
        print(f"| {name} | {fd:.2f} / {fs:.2f} ms ({fd / fs:.1f}x) | {bd:.2f} / {bs:.2f} ms ({bd / bs:.1f}x) |")


if __name__ == "__main__":
    main()
