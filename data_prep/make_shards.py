"""Write WebDataset tar shards from any manifest, optionally split into duration buckets.

Each utterance becomes `<key>.<flac|wav|...>` (the audio file's bytes as stored; a slice of a longer
recording, i.e. an entry with an `offset`, is stored as float WAV) and `<key>.json` (text or label,
duration, source path). `OUT/index.json` lists the shards with their utterance counts and durations;
`quartznet.data.shards.ShardDataset` reads it to give every GPU the same number of batches.

Examples:
  python -m data_prep.make_shards --manifest data/train-clean-100.json --out shards/train-clean-100
  python -m data_prep.make_shards --manifest a.json,b.json --out shards/ab --num-buckets 4 --max-duration 16.7
  python -m data_prep.make_shards --manifest kws_train.json --field label --out shards/kws --shard-size 2000

Rerunning the same command resumes an interrupted run (finished shards are kept) and does nothing
when all shards are written; the output depends only on the manifest and the options.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from data_prep.common import parse_args_with_debug, prep_errors
from quartznet.common.cli import at_least
from quartznet.data.shards import INDEX_NAME, write_shards


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m data_prep.make_shards",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--manifest", required=True, help="manifest(s), comma separated")
    parser.add_argument("--out", type=Path, required=True, help="output folder for the shards and index.json")
    parser.add_argument("--field", choices=["text", "label"], default="text", help="text (ASR) or label (classification); default: %(default)s")
    parser.add_argument("--shard-size", type=at_least(1), default=512, help="utterances per shard, about (default: %(default)s)")
    parser.add_argument("--num-buckets", type=at_least(1), default=1, help="equal-count duration buckets, one shard set each (default: %(default)s)")
    parser.add_argument("--no-shuffle", action="store_true", help="keep manifest order inside shards (default: shuffled from --seed)")
    parser.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    parser.add_argument("--min-duration", type=at_least(0, float), help="leave out utterances shorter than this (seconds)")
    parser.add_argument("--max-duration", type=at_least(0, float, strictly=True),
                        help="leave out utterances longer than this (seconds)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args_with_debug(parser, argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:  # one error path: an `error:` line and the exit code, returned (sys.exit(main()) below)
        with prep_errors(args.debug, as_program=True):
            index = write_shards(
                args.manifest, args.out, field=args.field, shard_size=args.shard_size, num_buckets=args.num_buckets,
                shuffle=not args.no_shuffle, seed=args.seed, min_duration=args.min_duration,
                max_duration=args.max_duration, progress=not args.quiet,
            )
    except SystemExit as stop:
        return int(stop.code)
    print(
        f"{index['count']} utterances ({index['duration'] / 3600:.2f} h) in {len(index['shards'])} shards, "
        f"{len(index['buckets'])} bucket(s): {args.out / INDEX_NAME}"
    )
    for path, reason in index["skipped"]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
