"""Quiet output: the native libraries' own log lines are silenced unless ``--verbose``.

OpenCV (``[ WARN:0@0.03] global cap.cpp:215 ...``), FFmpeg (``[tcp @ 0x55...]
Connection refused``) and MediaPipe / TensorFlow Lite / absl (``W0000 00:00:...
inference_feedback_manager.cc:114] ...``, ``INFO: Created TensorFlow Lite XNNPACK
delegate``) write straight to the process's stderr from C++, past Python's logging.
Our own messages already say what went wrong, in one line.

:func:`quiet_native_logs` sets the switches these libraries read from the
environment (OpenCV and FFmpeg honour them; the user's own settings win), and,
for the command line, filters the process's stderr (file descriptor 2) through a
pipe that drops lines in those libraries' formats and passes everything else
through unchanged. Child processes inherit both. ``verbose=True`` changes nothing
and turns on Python's INFO logging instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import sys
import threading

ENVIRONMENT = {
    "OPENCV_LOG_LEVEL": "ERROR",          # OpenCV's [ WARN:...] lines
    "OPENCV_FFMPEG_LOGLEVEL": "-8",       # FFmpeg through OpenCV: AV_LOG_QUIET
    "GLOG_minloglevel": "2",              # glog (older MediaPipe builds)
    "TF_CPP_MIN_LOG_LEVEL": "3",          # TensorFlow Lite
}

NATIVE_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./+-]+:\d+\] "   # absl / glog
    rb"|INFO: Created TensorFlow Lite "                                # TensorFlow Lite
    rb"|WARNING: All log messages before absl::InitializeLog\(\) "     # absl
    rb"|\[ ?(?:WARN|INFO|DEBUG|ERROR):\d+@"                            # OpenCV
    rb"|\[[\w,.-]+ @ 0x[0-9a-f]+\] )")                                 # FFmpeg


def is_native_log(line: bytes) -> bool:
    """True for a line in one of the native libraries' log formats."""
    return bool(NATIVE_LINE.match(line))


_filter: _StderrFilter | None = None


def quiet_native_logs(verbose: bool = False, filter_stderr: bool = True) -> None:
    """Silence the native libraries (see the module notes); idempotent. ``filter_stderr``
    is for a whole process (the command line): False (main() called from a program or a
    test) changes neither its environment nor its stderr, only OpenCV's level."""
    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        return
    for key, value in (ENVIRONMENT if filter_stderr else {}).items():
        os.environ.setdefault(key, value)
    if "cv2" in sys.modules:   # already imported: its level was read; set it now
        try:
            sys.modules["cv2"].setLogLevel(2)   # cv2.utils.logging.LOG_LEVEL_ERROR
        except Exception:  # noqa: BLE001 - an OpenCV without it: the filter still works
            pass
    global _filter
    if filter_stderr and _filter is None:
        try:
            _filter = _StderrFilter()
        except OSError:   # no usable fd 2 (closed, odd platform): leave stderr as it is
            _filter = None


class _StderrFilter:
    """Replace fd 2 with a pipe; a thread forwards every line that is not a native log
    line to the original stderr. Restored (and drained) at exit."""

    def __init__(self):
        sys.stderr.flush()
        self._original = os.dup(2)
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._reader = os.fdopen(read_fd, "rb", buffering=0)
        self._thread = threading.Thread(target=self._pump, name="stderr-filter", daemon=True)
        self._thread.start()
        atexit.register(self.restore)

    def _pump(self) -> None:
        pending = b""
        while True:
            try:
                chunk = self._reader.read(65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            pending += chunk
            *lines, pending = pending.split(b"\n")
            self._forward(b"".join(line + b"\n" for line in lines if not is_native_log(line)))
        if pending and not is_native_log(pending):
            self._forward(pending)

    def _forward(self, data: bytes) -> None:
        while data:
            try:
                data = data[os.write(self._original, data):]
            except OSError:
                return

    def restore(self) -> None:
        """Put the original stderr back and forward what is still in the pipe."""
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(self._original, 2)   # the pipe's last writer is gone: the reader sees its end
        self._thread.join(2.0)
