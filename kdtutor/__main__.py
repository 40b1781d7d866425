"""The command line: python -m kdtutor data | check | corpus.

Each command prints what it found and exits with status 0 when all is well, 1 when something is missing or corrupt
(the message says how to fix it). python -m kdtutor COMMAND --help describes one command.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from kdtutor.data import DatasetNotFoundError, load_fashion_mnist
from kdtutor.selfcheck import check

COMMANDS = {  # plain text: argparse prints it as it is
    "data": "find Fashion-MNIST (or download it with torchvision, unless --no-download) and say where; exit 1 if "
            "it is missing or a file is corrupt",
    "check": "is this machine ready for the book? versions, device, data, shipped models, extras, speed; exit 1 if "
             "the data is missing or corrupt or a shipped model fails verification",
    "corpus": "find Part V's text corpus (the King James Version, Debian's bible-kjv) and say so, or write it to "
              "FILE with --write (to copy to a machine without the package); exit 1 if it is missing",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtutor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    data = commands.add_parser("data", help=COMMANDS["data"], description=COMMANDS["data"])
    data.add_argument("--no-download", action="store_true", help="do not try the internet")
    commands.add_parser("check", help=COMMANDS["check"], description=COMMANDS["check"])
    corpus = commands.add_parser("corpus", help=COMMANDS["corpus"], description=COMMANDS["corpus"])
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
