"""``python -m kdtutor data [--no-download]``: find (or download) Fashion-MNIST and say so; exit 1 if missing.
``python -m kdtutor check``: is this machine ready for the book? (versions, device, data, shipped models, extras,
speed); exit 1 if the data is missing or a shipped model fails verification."""

from __future__ import annotations

import argparse

from kdtutor.data import DatasetNotFoundError, load_fashion_mnist
from kdtutor.selfcheck import check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kdtutor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data", help="check that Fashion-MNIST is available, downloading it if allowed")
    data.add_argument("--no-download", action="store_true", help="do not try the internet")
    commands.add_parser("check", help="check this machine: versions, device, data, shipped models, extras, speed")
    args = parser.parse_args(argv)
    if args.command == "check":
        return 0 if check() else 1
    try:
        train, test = load_fashion_mnist(download=not args.no_download)
    except (DatasetNotFoundError, ValueError) as err:
        print(err)
        return 1
    print(f"Fashion-MNIST ok: {len(train)} training and {len(test)} test images")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
