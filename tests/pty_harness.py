"""Provides `Terminal`: the real `flow` command on a real pseudo-terminal, as a user's shell runs it.

The child gets the pty as its controlling terminal (so Ctrl-C typed on it is a real SIGINT from the
line discipline to the foreground process group, not a signal the test aims), `TERM=xterm-256color`
and no `NO_COLOR`, so Rich takes its live terminal path. A thread reads the master side all the
time: a child writing to a terminal nobody reads would block, which is a hang of the test, not of
the product. Waits are on the bytes arriving or the process ending, each bounded.
"""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

DEADLINE_S = 30.0
"""Upper bound of a single wait; never reached when all is well."""

READ_POLL_S = 0.05
"""The longest the reader waits for output before it looks whether the terminal is being closed."""


_ADOPT_TTY = (
    "import fcntl, os, sys, termios; fcntl.ioctl(0, termios.TIOCSCTTY, 0); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)
"""Run in the child after `setsid`: make the pty on fd 0 the session's controlling terminal, then
become `flow`. A tiny interpreter does it instead of a `preexec_fn`, which is unsafe in a parent
with threads (the pty readers of other tests)."""


class Terminal:
    """`python -m runner ARGS` attached to a fresh pty of `rows` x `columns`."""

    def __init__(
        self,
        *args: str,
        cwd: Path,
        env: dict[str, str] | None = None,
        rows: int = 30,
        columns: int = 100,
    ) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        full_env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS")}
        full_env.update({"TERM": "xterm-256color", "PYTHONUNBUFFERED": "1", **(env or {})})
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _ADOPT_TTY, sys.executable, "-m", "runner", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
        os.close(slave)
        self._master = master
        self._data = bytearray()
        self._changed = threading.Condition()
        self._eof = False
        self._hanging_up = threading.Event()
        self._reader = threading.Thread(target=self._read, name="pty-reader", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        # The reader owns the master until `hang_up` stops it: closing a descriptor another thread is
        # blocked reading leaves the terminal open (no SIGHUP) until that read returns, and the number
        # may meanwhile be reused by another file. So it never blocks for longer than `READ_POLL_S`.
        master = self._master
        while True:
            if self._hanging_up.is_set():
                return
            if not select.select([master], [], [], READ_POLL_S)[0]:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every slave descriptor closed (the child and its workers exited)
                chunk = b""
            with self._changed:
                if not chunk:
                    self._eof = True
                    self._changed.notify_all()
                    return
                self._data += chunk
                self._changed.notify_all()

    @property
    def output(self) -> bytes:
        """Every byte the child wrote to the terminal so far."""
        with self._changed:
            return bytes(self._data)

    def type(self, keys: bytes) -> None:
        """Type on the keyboard (b"\\x03" is Ctrl-C)."""
        os.write(self._master, keys)

    def wait_for(self, pattern: bytes, timeout: float = DEADLINE_S) -> re.Match[bytes]:
        """Block until `pattern` (a regex) appears in the output; fail with what was seen."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = regex.search(self._data)
                if found:
                    return found
                left = deadline - time.monotonic()
                if left <= 0 or self._eof:
                    raise AssertionError(
                        f"no {pattern!r} on the terminal after {timeout:g}s; it shows:\n{self.screen()}"
                    )
                self._changed.wait(left)

    def wait_exit(self, timeout: float = DEADLINE_S) -> int:
        """The exit status, once the child has ended and all its output is read."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(
                f"flow did not exit within {timeout:g}s (hung); the terminal shows:\n{self.screen()}"
            ) from None
        self._reader.join(DEADLINE_S)
        return code

    def screen(self) -> str:
        """The output as text, escapes shown, for failure messages."""
        return self.output.decode("utf-8", "replace")[-4000:].encode("unicode_escape").decode()

    def kill(self) -> None:
        """End the child's whole session (its workers have sessions of their own: killed by flow)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def hang_up(self) -> None:
        """Close the terminal, as closing its window does: the kernel sends SIGHUP to the child."""
        if self._master >= 0:
            self._hanging_up.set()
            self._reader.join(DEADLINE_S)  # within `READ_POLL_S`: then nothing reads the master
            os.close(self._master)
            self._master = -1
            with self._changed:
                self._eof = True
                self._changed.notify_all()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.hang_up()
        self._reader.join(DEADLINE_S)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def plain(data: bytes) -> str:
    """The terminal output with CSI/OSC escape sequences (the product's own styling) removed."""
    text = data.decode("utf-8", "replace")
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    text = re.sub(r"\x1b\][^\x07\x1b]*(\x07|\x1b\\)", "", text)
    return text.replace("\r", "")
