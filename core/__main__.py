import json
import os
import sys

if sys.stdout is None:  # started with its output closed (``>&-``): an answer printed nowhere once exited 0
    print('{"error": "python -m core: its output is closed, so it has nowhere to answer."}', file=sys.stderr)
    sys.exit(1)
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
    code = main()
    sys.stdout.flush()  # here, not at exit: a full disk or a closed pipe is then the error below (exit 120 before)
except KeyboardInterrupt:  # Ctrl+C while the program still imports, before main() answers for itself
    print('{"error": "interrupted"}', flush=True)
    code = 1
except OSError as exc:  # its output cannot be written (stdout full, or a pipe whose reader is gone): nor its error
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing is flushed there again at exit
    reason = exc.strerror or type(exc).__name__  # stderr may still be read: the same JSON as every other error
    print(json.dumps({"error": f"python -m core: its output could not be written ({reason})."}), file=sys.stderr)
    code = 1
sys.exit(code)
