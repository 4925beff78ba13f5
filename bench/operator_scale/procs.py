"""The processes of the operator-scale benchmark: the emulated API server, moto S3, and how each is measured."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import boto3
import psutil
from botocore.config import Config

HERE = Path(__file__).resolve().parent
ACCESS, SECRET = "AKIABENCH00000000000", "benchSecretKey0000000000000000000000000"
BUCKET = "cpt-bench"
MOTO = ("import sys; from moto.server import ThreadedMotoServer\n"
        "s = ThreadedMotoServer(ip_address='127.0.0.1', port=0, verbose=False); s.start()\n"
        "print(s.get_host_and_port()[1], flush=True); sys.stdin.read(); s.stop()\n")


class Emulator:
    def __init__(self, workdir: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "emulator_server.py"), workdir],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONWARNINGS="ignore"))
        self.kubeconfig = self.proc.stdout.readline().strip()  # type: ignore[union-attr]
        if not self.kubeconfig:
            raise RuntimeError("the emulator did not start")
        self.ps = psutil.Process(self.proc.pid)
        self._lock = threading.Lock()

    def ask(self, cmd: str) -> Any:
        with self._lock:
            self.proc.stdin.write(cmd + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            return json.loads(self.proc.stdout.readline())  # type: ignore[union-attr]

    def stop(self) -> None:
        try:
            self.proc.stdin.write("quit\n")  # type: ignore[union-attr]
            self.proc.stdin.close()  # type: ignore[union-attr]
            self.proc.wait(15)
        except Exception:
            self.proc.kill()
            self.proc.wait()


def start_moto() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-c", MOTO], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
    port = int(proc.stdout.readline())  # type: ignore[union-attr]
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id=ACCESS,
                 aws_secret_access_key=SECRET, config=Config(s3={"addressing_style": "path"})
                 ).create_bucket(Bucket=BUCKET)
    return proc, endpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Sampler(threading.Thread):
    """Peak RSS of a process, sampled every 50 ms."""

    def __init__(self, proc: psutil.Process) -> None:
        super().__init__(daemon=True)
        self.proc, self.peak, self.done = proc, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.peak = max(self.peak, self.proc.memory_info().rss)
            except psutil.Error:
                return
            self.done.wait(0.05)


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


def stop_process(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
