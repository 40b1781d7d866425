"""``python -m kdtutor data [--no-download]``: find (or download) Fashion-MNIST and say so; exit 1 if missing.
``python -m kdtutor check``: is this machine ready for the book? (versions, device, data, shipped models, extras,
speed); exit 1 if the data is missing or a shipped model fails verification.
``python -m kdtutor corpus [--write FILE]``: find Part V's text corpus (the King James Version, Debian's bible-kjv)
and say so, or write it to FILE (to copy to a machine without the package); exit 1 if missing."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdtutor.data import DatasetNotFoundError, load_fashion_mnist
from kdtutor.selfcheck import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtutor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="check that Fashion-MNIST is available, downloading it if allowed")
    data.add_argument("--no-download", action="store_true", help="do not try the internet")
    commands.add_parser("check", help="check this machine: versions, device, data, shipped models, extras, speed")
    corpus = commands.add_parser("corpus", help="check that Part V's corpus is available, or write it to a file")
    corpus.add_argument("--write", metavar="FILE", help="write the verified text to FILE (UTF-8)")
    args = parser.parse_args(argv)
    if args.command == "check":
        return 0 if check() else 1
    if args.command == "corpus":
        return _corpus(args.write)
    try:
        train, test = load_fashion_mnist(download=not args.no_download)
    except (DatasetNotFoundError, ValueError) as err:
        print(err)
        return 1
    print(f"Fashion-MNIST ok: {len(train)} training and {len(test)} test images")
    return 0


def _corpus(write: str | None) -> int:
    from kdtutor import lm  # a room of its own: imported only for this command

    try:
        text = lm.kjv_text()
    except (lm.CorpusNotFoundError, ValueError) as err:
        print(err)
        return 1
    if write:
        Path(write).parent.mkdir(parents=True, exist_ok=True)
        Path(write).write_text(text, encoding="utf-8")
    print(f"King James Version ok: {len(text):,} characters, SHA-256 verified" + (f"; wrote {write}" if write else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
