import atexit
import json
import os
import sys

_code: int = 1  # what the process exits with, for the last step below


@atexit.register  # first registered, so run last: after logging's, the decode workers' and every other exit step
def _end_a_training_rank_at_once() -> None:
    """A torchrun rank that joined a process group skips the interpreter's teardown (core.training.distributed
    ``joined_a_group`` says why); its output is flushed first. Looked up in sys.modules: never imports torch."""
    distributed = sys.modules.get("core.training.distributed")
    if distributed is None or not distributed.joined_a_group():
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # said already where it could be (below); a closed stream has nothing left
            pass
    os._exit(_code)


if sys.stdout is None:  # started with its output closed (``>&-``): an answer printed nowhere once exited 0
    print('{"error": "python -m core: its output is closed, so it has nowhere to answer."}', file=sys.stderr)
    sys.exit(1)


def _unwritable(why: str) -> int:
    """Its output cannot be written: said on stderr, in the JSON of every other error (stderr may still be read),
    and stdout pointed at nothing, so nothing is flushed there again at exit (Python's own text, exit 120)."""
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    print(json.dumps({"error": f"python -m core: {why}."}), file=sys.stderr)
    return 1


try:
    import logging

    from core.cli import main
    from core.wording import json_line, one_line

    class _JsonLines(logging.Formatter):
        """A warning logged on the way (a data root that does not exist) reaches stderr as one JSON line."""

        def format(self, record: logging.LogRecord) -> str:
            return json_line({record.levelname.lower(): one_line(record.getMessage())})

    _handler = logging.StreamHandler()  # stderr; warnings and above, Python's default level
    _handler.setFormatter(_JsonLines())
    logging.getLogger().addHandler(_handler)
    code = main()  # flushed below, not at exit: a full disk or closed pipe is its JSON error, not exit 120
except SystemExit as done:  # --help and argparse's own exits: their text flushed here too, as an answer is
    code = done.code
except KeyboardInterrupt:  # Ctrl+C while the program still imports, before main() answers for itself
    print('{"error": "interrupted"}')
    code = 1
except OSError as exc:  # its output cannot be written (stdout full, or a pipe whose reader is gone): nor its error
    code = _unwritable(f"its output could not be written ({exc.strerror or type(exc).__name__})")
from core.stop_signals import interrupt_on_stop_signals  # noqa: E402 - loaded by core.cli already

restore = interrupt_on_stop_signals()  # main put SIGTERM and SIGHUP back: a kill while a slow reader holds the
try:  # answer answers as Ctrl+C does, not with exit 143 and no word (a review)
    sys.stdout.flush()
except OSError as exc:
    restore()  # a second stop while the error is said ends the process as before, not in a traceback
    code = _unwritable(f"its output could not be written ({exc.strerror or type(exc).__name__})")
except KeyboardInterrupt:  # Ctrl+C while a slow reader (less) kept the answer waiting: main's handler is gone
    restore()
    code = _unwritable("interrupted while its output was being written")
_code = code if isinstance(code, int) else 0 if code is None else 1  # sys.exit's own reading of it
sys.exit(code)
