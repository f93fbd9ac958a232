"""What the command-line tools share: quiet libraries, and bad input reported in one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from absl import app, flags, logging

from basque_vlm.runtime import host_memory, paths


def quiet_libraries() -> None:
    """Keeps stderr for our own one-line errors: no INFO logs from Orbax, no transformers notes,
    no storage client's tracebacks of a request it gives up on (`run` reports it in one line),
    and no TPU runtime errors where there is no TPU (``skip_absent_tpu``)."""
    import logging as std_logging

    import transformers

    skip_absent_tpu()
    logging.set_verbosity(logging.WARNING)
    std_logging.getLogger("gcsfs").setLevel(std_logging.CRITICAL)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()


def reuse_memory_on_cpu() -> None:
    """For ``train``, which runs one step thousands of times: where JAX runs on the CPU, freed
    memory is kept for the next step (`host_memory.keep_freed_memory`). After
    ``skip_absent_tpu``, before JAX's first array. Not for the tools that mostly compile: with
    one heap for all threads, XLA's compiler runs ~25% slower."""
    import jax

    if (jax.config.jax_platforms or "").split(",")[0] == "cpu":
        host_memory.keep_freed_memory()


def skip_absent_tpu() -> None:
    """Runs JAX on the CPU when this machine has neither a TPU nor an NVIDIA GPU and
    ``JAX_PLATFORMS`` is unset. libtpu is installed everywhere (the ``aot`` fit check compiles
    with it), and on a machine without TPU chips its start-up prints a screenful of errors about
    TPU hostnames before JAX falls back to the CPU anyway. Call it before JAX's first array."""
    from jax._src import hardware_utils  # the same probe JAX itself uses before starting libtpu

    if os.environ.get("JAX_PLATFORMS"):
        return
    if hardware_utils.num_available_tpu_chips_and_device_id()[0] == 0 and \
            not hardware_utils.has_visible_nvidia_gpu():
        import jax

        jax.config.update("jax_platforms", "cpu")


def fail(prog: str, message: object) -> NoReturn:
    print(f"{prog}: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(1)


def run(prog: str, body: Callable[[], None]) -> None:
    """Runs ``body``; an expected failure (a ValueError such as a bad checkpoint, an OSError
    such as a missing folder, a request to a bucket that failed after its retries) exits with
    status 1 and ``prog: <reason>`` as one stderr line."""
    try:
        body()
    except (ValueError, OSError) as e:
        fail(prog, e)
    except paths.storage_errors() as e:
        fail(prog, f"a storage request failed after its retries ({type(e).__name__}: {e}); "
                   "rerun when the storage answers again")


def main(prog: str, body: Callable[..., None], commands: Sequence[str] = ()
         ) -> Callable[[list[str]], None]:
    """An ``absl.app.run`` main that ``run``s ``body``. Without ``commands`` it refuses
    positional arguments; with them, it takes exactly one of ``commands`` and passes it to
    ``body`` (``python -m basque_vlm.sweep plan ...``)."""

    def app_main(argv: list[str]) -> None:
        args = argv[1:]
        if not commands:
            if args:
                fail(prog, f"unexpected arguments: {' '.join(args)}")
            run(prog, body)
            return
        if len(args) != 1 or args[0] not in commands:
            fail(prog, f"expected one command, {' | '.join(commands)}; got "
                       f"{' '.join(args) or 'none'}")
        run(prog, lambda: body(args[0]))

    return app_main


def start(prog: str, body: Callable[..., None], commands: Sequence[str] = ()) -> None:
    """Runs a CLI: ``absl.app.run`` with `main` and `flags_parser`."""
    app.run(main(prog, body, commands), flags_parser=flags_parser(prog))


def flags_parser(prog: str) -> Callable[[list[str]], list[str]]:
    """``absl.app.run``'s ``flags_parser``, with an override of a config key that does not exist
    (``--config.train.num_step=5``) reported in one line instead of ml_collections' traceback."""

    def parse(argv: list[str]) -> list[str]:
        try:
            return flags.FLAGS(argv)
        except flags.Error as e:
            fail(prog, f"{e} (--helpfull lists the flags)")
        except (AttributeError, KeyError) as e:
            while e.args and isinstance(e.args[0], BaseException):  # ml_collections wraps it
                e = e.args[0]
            key, *hint = str(e.args[0] if e.args else e).splitlines()
            overrides = [a.split("=")[0] for a in argv[1:]
                         if a.startswith("--") and "." in a.split("=")[0]]
            fail(prog, f"{', '.join(overrides)}: the config has no key {key}"
                       + "".join(f". {h}" for h in hint))

    return parse
