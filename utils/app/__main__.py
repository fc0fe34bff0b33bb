"""``python -m utils.app`` (``make app``): serve the search page on http://127.0.0.1:$APP_PORT
(default 8501), offline: no usage statistics, no browser opened, no file watcher; one torch
thread unless ``OMP_NUM_THREADS`` says otherwise.
Extra arguments go to ``streamlit run`` (e.g. ``--server.port 8600``)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from utils.core import paths

PAGE = Path(__file__).with_name("page.py")
DEFAULT_PORT = 8501


def streamlit_command(port: int, extra: list[str]) -> list[str]:
    """The ``streamlit run`` command line of the page on 127.0.0.1:port."""
    return [sys.executable, "-m", "streamlit", "run", str(PAGE),
            "--server.address", "127.0.0.1", "--server.port", str(port),
            "--server.headless", "true", "--browser.gatherUsageStats", "false",
            "--server.fileWatcherType", "none", *extra]


def read_port() -> int:
    """$APP_PORT as a port number; SystemExit with the fix when it is not one."""
    value = os.environ.get("APP_PORT", str(DEFAULT_PORT))
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise SystemExit(f"APP_PORT={value!r}: give a port number from 1 to 65535, "
                         f"e.g. APP_PORT={DEFAULT_PORT} make app")
    return int(value)


def main(argv: list[str] | None = None) -> None:
    """Replace this process by the Streamlit server (Ctrl-C stops it)."""
    command = streamlit_command(read_port(), sys.argv[1:] if argv is None else argv)
    # The page imports utils: the repository root must be importable whatever the cwd.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(paths.ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    # One query is tiny work: on a shared 2-core CPU, a second OpenMP thread mostly waits for
    # a core (text encoder 2 ms with 1 thread, 530 ms with 2 at load 18; see the README).
    env.setdefault("OMP_NUM_THREADS", "1")
    print(f"Search page: http://127.0.0.1:{command[command.index('--server.port') + 1]}/ "
          f"(models from {paths.models_dir()})", flush=True)
    os.chdir(paths.ROOT)  # .streamlit/config.toml is read from the working directory
    os.execve(sys.executable, command, env)


if __name__ == "__main__":
    main()
