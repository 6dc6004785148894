import os
import sys

from core.cli import main

try:
    code = main()
except OSError as exc:  # its output cannot be written (stdout full, or a pipe whose reader is gone): nor its error
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing is flushed there again at exit
    print(f"python -m core: its output could not be written ({exc.strerror or type(exc).__name__}).", file=sys.stderr)
    code = 1
sys.exit(code)
