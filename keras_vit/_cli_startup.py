"""Quiet start-up for the `keras-vit` command: TensorFlow's log level and its start-up lines.

Standard library only: `keras_vit/__init__.py` imports it before keras (and so TensorFlow) when this process
is the command, since the console script and `python -m keras_vit.cli` both import the package first.
"""

from __future__ import annotations

import os

# Before anything imports TensorFlow: its Python and C++ logging below warnings (errors still show).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# isort: split
import atexit
import faulthandler
import re
import sys
import threading

# TensorFlow 2.21's start-up lines. Its shared libraries print them through absl before absl::InitializeLog
# runs, so no setting reaches them (measured: TF_CPP_MIN_LOG_LEVEL=3, GLOG_minloglevel=3, ABSL_MIN_LOG_LEVEL
# leave them; TF_CPP_MIN_LOG_LEVEL hides only cpu_feature_guard); the console script filters them out of
# stderr instead. TF_ENABLE_ONEDNN_OPTS is left alone: it changes the numerics.
STARTUP_LINE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ (port\.cc:\d+\] oneDNN custom operations are on"
    r"|cudart_stub\.cc:\d+\] Could not find cuda drivers on your machine"
    r"|cpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized)"
    r"|To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags\."
)
# Reported after "Could not find cuda drivers", it says the same thing again (no GPU driver here).
NO_DRIVER_CUINIT = re.compile(r"E\d{4} [\d:. ]+\d+ cuda_platform\.cc:\d+\] failed call to cuInit")


class StartupLineFilter:
    """Passes stderr (file descriptor 2, where C++ logs too) through a thread that drops `STARTUP_LINE`s."""

    def __init__(self) -> None:
        self.stderr_fd = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        if faulthandler.is_enabled():  # crash reports bypass the thread, which dies with the process
            faulthandler.enable(file=self.stderr_fd)
        self.no_cuda_driver = False
        self.thread = threading.Thread(target=self._pump, args=(read_fd,), name="stderr-filter", daemon=True)
        self.thread.start()

    def keep(self, line: str) -> bool:
        if STARTUP_LINE.match(line):
            self.no_cuda_driver |= "Could not find cuda drivers" in line
            return False
        return not (self.no_cuda_driver and NO_DRIVER_CUINIT.match(line))

    def _pump(self, read_fd: int) -> None:
        pending = b""
        while chunk := os.read(read_fd, 65536):
            *lines, pending = (pending + chunk).split(b"\n")
            kept = [line + b"\n" for line in lines if self.keep(line.decode(errors="replace"))]
            if kept:
                os.write(self.stderr_fd, b"".join(kept))
        if pending and self.keep(pending.decode(errors="replace")):
            os.write(self.stderr_fd, pending)
        os.close(read_fd)

    def close(self) -> None:
        """Puts the real stderr back; the thread writes what is left once the pipe's last writer closes."""
        sys.stderr.flush()
        os.dup2(self.stderr_fd, 2)
        self.thread.join(timeout=5)


_startup_filter: list[StartupLineFilter] = []


def filter_startup_lines() -> None:
    """Drops TensorFlow's start-up lines from this process's stderr until it exits (once per process)."""
    if not _startup_filter:
        _startup_filter.append(StartupLineFilter())
        atexit.register(_startup_filter[0].close)


def is_command_process() -> bool:
    """True when this interpreter was started as `keras-vit ...` or `python -m keras_vit.cli ...`.

    `keras_vit/__init__.py` asks before it imports keras (and so TensorFlow): the console script and
    `python -m` both import the package before this module's code runs.
    """
    argv = sys.orig_argv
    module_run = any(flag == "-m" and name == "keras_vit.cli" for flag, name in zip(argv, argv[1:]))
    return module_run or os.path.basename(sys.argv[0]) in ("keras-vit", "keras-vit.exe")
