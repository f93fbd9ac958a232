"""What the command-line tools share: quiet libraries, and bad input reported in one line."""

from __future__ import annotations

import sys
from collections.abc import Callable

from absl import logging


def quiet_libraries() -> None:
    """Keeps stderr for our own one-line errors: no INFO logs from Orbax, no transformers notes."""
    import transformers

    logging.set_verbosity(logging.WARNING)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def fail(prog: str, message: object) -> None:
    print(f"{prog}: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(1)


def run(prog: str, body: Callable[[], None]) -> None:
    """Runs ``body``; an expected failure (a ValueError such as a bad checkpoint, or an OSError
    such as a missing folder) exits with status 1 and ``prog: <reason>`` as one stderr line."""
    try:
        body()
    except (ValueError, OSError) as e:
        fail(prog, e)


def main(prog: str, body: Callable[[], None]) -> Callable[[list[str]], None]:
    """An ``absl.app.run`` main that refuses stray positional arguments, then ``run``s ``body``."""

    def app_main(argv: list[str]) -> None:
        if len(argv) > 1:
            fail(prog, f"unexpected arguments: {' '.join(argv[1:])}")
        run(prog, body)

    return app_main
