"""How `cpt run` starts a stage process: forked from the trainer's fork server, or a plain subprocess.

Both give the runner the same handle (output lines, exit code, interrupt, kill). The fork server
(`cpt_trainer.forkserver`) saves each stage the ~4-5 s of importing torch/transformers/TRL; the plain subprocess
is the fallback when the server cannot start, and what `CPT_FORKSERVER=0` asks for. Both are started as processes
(`python -m ...`): nothing of the trainer is imported here.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, Optional

from cpt_core.protocol import FORKSERVER_EXIT as EXIT, FORKSERVER_PID as PID, FORKSERVER_READY as READY
from cpt_core.protocol import die_with_parent

START_TIMEOUT = 300.0  # importing the trainer on a loaded machine


class _Lines:
    """Lines from a pipe with an optional deadline (select + os.read, so no buffer hides ready data)."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.buf = b""

    def readline(self, deadline: Optional[float] = None) -> Optional[str]:
        """The next line ('' at EOF), or None when the deadline passed first."""
        while b"\n" not in self.buf:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.fd], [], [], wait)[0]:
                return None
            chunk = os.read(self.fd, 65536)
            if not chunk:
                line, self.buf = self.buf, b""
                return line.decode(errors="replace")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace") + "\n"


class SubprocessStage:
    """A stage as `python -m cpt_trainer.cli ...` in its own process."""

    def __init__(self, argv: list[str], cwd: Path, env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "cpt_trainer.cli", *argv], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, bufsize=1, env=env, cwd=cwd,
                                     preexec_fn=die_with_parent)
        self.pid = self.proc.pid

    def lines(self) -> Iterator[str]:
        assert self.proc.stdout is not None
        yield from self.proc.stdout

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)


class ForkedStage:
    """A stage forked by the fork server; its output and exit code arrive on the server's stdout."""

    def __init__(self, server: "ForkServer", pid: int) -> None:
        self.server, self.pid, self.code = server, pid, None

    def _next(self, deadline: Optional[float] = None) -> Optional[str]:
        line = self.server.out.readline(deadline)
        if line == "":
            self.server.broken = True
            self.code = -signal.SIGKILL  # the server died under the stage
            return None
        if line is not None and line.startswith(EXIT):
            self.code = int(line[len(EXIT):].strip())
            return None
        return line

    def lines(self) -> Iterator[str]:
        while self.code is None:
            line = self._next()
            if line is not None:
                yield line

    def wait(self, timeout: Optional[float] = None) -> Optional[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.code is None:
            if self._next(deadline) is None and self.code is None:
                return None  # deadline passed
        return self.code

    def signal(self, sig: int) -> None:
        if self.code is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


class ForkServer:
    """`python -m cpt_trainer.forkserver`, started once per `cpt run`; one stage at a time."""

    command = [sys.executable, "-m", "cpt_trainer.forkserver"]

    def __init__(self, env: dict, log_path: Path) -> None:
        with open(log_path, "ab") as log:  # the server's own warnings; each stage's output goes to its own log
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=log, env=env, preexec_fn=die_with_parent)
        assert self.proc.stdout is not None
        self.out = _Lines(self.proc.stdout.fileno())
        self.broken = False
        line = self.out.readline(time.monotonic() + START_TIMEOUT)
        if line is None or line.strip() != READY:
            self.close()
            raise RuntimeError(f"the fork server did not start (said {line!r})")

    def start(self, argv: list[str], cwd: Path) -> ForkedStage:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"argv": argv, "cwd": str(cwd)}) + "\n").encode())
        self.proc.stdin.flush()
        line = self.out.readline(time.monotonic() + 60)
        if not line or not line.startswith(PID):
            self.broken = True
            raise RuntimeError(f"the fork server did not start the stage (said {line!r})")
        return ForkedStage(self, int(line[len(PID):]))

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                assert self.proc.stdin is not None
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Launcher:
    """Starts stages through the fork server when it works, as plain subprocesses otherwise."""

    def __init__(self, env: dict, workdir: Path, log=print) -> None:
        self.env, self.log, self.workdir = env, log, workdir
        self.use_fork_server = env.get("CPT_FORKSERVER", "1") != "0"
        self.server: Optional[ForkServer] = None

    def start(self, argv: list[str], cwd: Path):
        if self.use_fork_server:
            try:
                if self.server is None or self.server.broken:
                    if self.server is not None:
                        self.server.close()
                    self.server = ForkServer(self.env, self.workdir / "forkserver.log")
                return self.server.start(argv, cwd)
            except (OSError, RuntimeError) as exc:
                self.log(f"    fork server unavailable ({exc}); stages run as plain processes")
                self.use_fork_server = False
        return SubprocessStage(argv, cwd, self.env)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
