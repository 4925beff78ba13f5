"""A TCP proxy on 127.0.0.1 that injects faults into the first connections it accepts, then passes traffic
through: HTTP 500/503 answers, connection resets right after a request head, and resets in the middle of a
request or response body. Faults are real socket-level events, so botocore and s3transfer see exactly what they
would see from a flaky S3 endpoint."""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections import deque
from typing import Optional

ERROR_BODY = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code><Message>injected</Message>'
              b'<RequestId>fault</RequestId></Error>')


class FaultProxy:
    """plan: one action per new connection, in order: "pass", "500", "503", "reset" (RST after the request
    head), "cut:N" (RST after N request bytes went upstream), "cutdown:N" (RST after N response bytes).
    cut_requests / cut_responses reset whichever connections first carry more than N bytes (mid-transfer)."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.plan: deque[str] = deque()
        self.injected = 0
        self.connections = 0
        self.cuts_fired = 0
        self._cut_up: tuple[int, int] = (0, 0)  # (after_bytes, times left)
        self._cut_down: tuple[int, int] = (0, 0)
        self._lock = threading.Lock()
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = False
        self._live: set[socket.socket] = set()
        self._down = False
        self.latency = 0.0
        self.refused = 0  # connections reset while down
        threading.Thread(target=self._accept, daemon=True).start()

    def inject(self, *actions: str) -> None:
        """Queue faults for the next new connections, and close the idle kept-alive ones so that the client's
        next request needs a new connection (call it between requests, not during one)."""
        with self._lock:
            self.plan.extend(actions)
            live, self._live = self._live, set()
        for sock in live:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def down(self) -> None:
        """S3 stops answering: live connections are reset and every new one too, until `up()`."""
        with self._lock:
            self._down = True
            live, self._live = self._live, set()
        for sock in live:
            _rst(sock)

    def slow(self, seconds: float) -> None:
        """Every response chunk waits `seconds` before it goes on (a slow or congested S3); 0 = full speed."""
        self.latency = seconds

    def up(self) -> None:
        with self._lock:
            self._down = False

    def cut_requests(self, after_bytes: int, times: int) -> None:
        """Reset the next `times` connections whose request bytes exceed after_bytes (mid-upload)."""
        with self._lock:
            self._cut_up = (after_bytes, times)

    def cut_responses(self, after_bytes: int, times: int) -> None:
        """Reset the next `times` connections whose response bytes exceed after_bytes (mid-download)."""
        with self._lock:
            self._cut_down = (after_bytes, times)

    def _take_cut(self, direction: str, sent: int) -> bool:
        with self._lock:
            after, left = self._cut_up if direction == "up" else self._cut_down
            if left <= 0 or sent <= after:
                return False
            if direction == "up":
                self._cut_up = (after, left - 1)
            else:
                self._cut_down = (after, left - 1)
            self.cuts_fired += 1
            return True

    def close(self) -> None:
        self._stop = True
        self._sock.close()

    def _next(self) -> str:
        with self._lock:
            self.connections += 1
            if self._down:
                self.refused += 1
                return "down"
            action = self.plan.popleft() if self.plan else "pass"
            if action != "pass":
                self.injected += 1
            return action

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client, self._next()), daemon=True).start()

    def _serve(self, client: socket.socket, action: str) -> None:
        try:
            if action == "down":
                _rst(client)
                return
            if action in ("500", "503", "reset"):
                head = _read_head(client)
                if action == "reset":
                    _rst(client)
                    return
                if b"100-continue" not in head.lower():
                    _drain_body(client, head)
                code = b"InternalError" if action == "500" else b"SlowDown"
                body = ERROR_BODY.replace(b"{code}", code)
                reason = b"Internal Server Error" if action == "500" else b"Slow Down"
                client.sendall(b"HTTP/1.1 " + action.encode() + b" " + reason + b"\r\nContent-Type: application/xml"
                               b"\r\nContent-Length: " + str(len(body)).encode() + b"\r\nConnection: close\r\n\r\n"
                               + body)
                _linger_close(client)
                return
            up_limit = int(action.split(":")[1]) if action.startswith("cut:") else None
            down_limit = int(action.split(":")[1]) if action.startswith("cutdown:") else None
            upstream = socket.create_connection(self.upstream)
            with self._lock:
                self._live.add(client)
            threading.Thread(target=self._pump, args=(client, upstream, up_limit, "up"), daemon=True).start()
            self._pump(upstream, client, down_limit, "down")
        except OSError:
            client.close()

    def _pump(self, src: socket.socket, dst: socket.socket, limit: Optional[int], direction: str) -> None:
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if (limit is not None and sent + len(data) > limit) or self._take_cut(direction, sent + len(data)):
                    dst.sendall(data[: max(0, (limit or 0) - sent)] if limit is not None else data[:1])
                    _rst(src)
                    _rst(dst)
                    return
                if direction == "down" and self.latency:
                    time.sleep(self.latency)
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for sock in (src, dst):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def _rst(sock: socket.socket) -> None:
    """Abort with a TCP RST. SHUT_RD first wakes a thread blocked in recv on the same socket; without it the
    close would wait for that thread and the peer would never see the reset."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    finally:
        sock.close()


def _linger_close(sock: socket.socket) -> None:
    """Half-close after answering and swallow what the client still sends, so it reads our answer instead of
    a reset (closing with unread input makes the kernel send RST)."""
    try:
        sock.shutdown(socket.SHUT_WR)
        sock.settimeout(0.3)
        while sock.recv(65536):
            pass
    except OSError:
        pass
    sock.close()


def _read_head(sock: socket.socket) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            break
        buf += data
    return buf


def _drain_body(sock: socket.socket, head: bytes) -> None:
    """Read the rest of the request so the client is not cut off while sending (it then reads our answer)."""
    header, _, rest = head.partition(b"\r\n\r\n")
    length = None
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    sock.settimeout(0.5)
    try:
        if length is not None:
            while len(rest) < length:
                data = sock.recv(65536)
                if not data:
                    return
                rest += data
        elif b"chunked" in header.lower():
            while not rest.endswith(b"\r\n\r\n") or b"\r\n0\r\n" not in b"\r\n" + rest:
                data = sock.recv(65536)
                if not data:
                    return
                rest += data
    except OSError:
        return
