"""`python -m growthpace <command> ...`: the one entrypoint (the `growthpace` console script is the same)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    from growthpace.cli import app

    app(args=sys.argv[1:] if argv is None else argv, prog_name="growthpace")


if __name__ == "__main__":
    main()
