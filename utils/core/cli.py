"""How every command line of the project behaves: a known bad input ends in one line on stderr
that names the file, what is wrong and the fix (exit status 1), never a traceback; the work's
summary is printed on success. Argument types that refuse nonsense before any work starts.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def run_command(work: Callable[[], str | None], errors: tuple[type[BaseException], ...],
                prefix: str = "error") -> int:
    """Run a command line's ``work`` -> 0 after printing its summary line, or 1 after
    printing a named error (one of ``errors``) as ``prefix: message`` on stderr."""
    try:
        summary = work()
    except errors as error:
        print(f"{prefix}: {error}", file=sys.stderr)
        return 1
    if summary:
        print(summary)
    return 0


def positive_int(text: str) -> int:
    """An argparse type: a whole number >= 1 (e.g. --batch-size, --queries)."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)
