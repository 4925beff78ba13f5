"""Storage endpoints a hostile (or broken) tenant could point a run at, as real servers on 127.0.0.1.

- `Silent`: accepts TCP connections and never answers (nor closes them).
- `HostileS3("paginate")`: answers every ListObjectsV2 with a full page, IsTruncated=true and a new continuation
  token, forever.
- `HostileS3("oversized")`: lists one small task manifest, accepts the owner marker's PUT, then serves the
  manifest as an endless chunked body (no Content-Length), or with `declared=True` a Content-Length of 1 GiB.
- `HostileS3("deny:<Code>")`: answers everything 403 with that S3 error code (InvalidAccessKeyId, ...).

Each counts what it served, so a test can show the reader stopped.
"""

from __future__ import annotations

import socket
import threading
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

PAGE_KEYS = 1000
CHUNK = b"x" * 65536


class Silent:
    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(512)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.held: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)  # never read, never answered, never closed

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for conn in self.held:
            conn.close()


class HostileS3:
    def __init__(self, mode: str, declared: bool = False) -> None:
        self.mode = mode
        self.declared = declared
        self.pages = 0
        self.body_bytes = 0  # in all
        self.largest = 0  # bytes written into one response before the reader hung up
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                owner.get(self)

            def do_PUT(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                owner.simple(self, 200, b"")

            do_HEAD = do_POST = do_DELETE = do_GET  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def get(self, req: BaseHTTPRequestHandler) -> None:
        if self.mode.startswith("deny:"):
            code = self.mode.split(":", 1)[1]
            return self.simple(req, 403, f"<Error><Code>{code}</Code><Message>no</Message></Error>".encode())
        url = urlparse(req.path)
        query = parse_qs(url.query)
        bucket, _, key = url.path.lstrip("/").partition("/")
        if "list-type" in query:
            prefix = (query.get("prefix") or [""])[0]
            return self.listing(req, bucket, prefix)
        if self.mode == "oversized" and key.endswith("manifest.json"):
            return self.endless(req)
        self.simple(req, 404, b"<Error><Code>NoSuchKey</Code><Message>no</Message></Error>")

    def listing(self, req: BaseHTTPRequestHandler, bucket: str, prefix: str) -> None:
        self.pages += 1
        if self.mode == "paginate":
            base = prefix if prefix.endswith("tasks/") else prefix + "tasks/"
            keys = [f"{base}{i}-t/{uuid.uuid4().hex}/shard-{j:05d}.bin" for i, j in
                    ((self.pages, j) for j in range(PAGE_KEYS))]
            truncated, token = "true", f"<NextContinuationToken>{uuid.uuid4().hex * 4}</NextContinuationToken>"
        else:  # oversized: one small task manifest under the run's tasks/
            base = prefix if prefix.endswith("tasks/") else prefix + "tasks/"
            keys, truncated, token = [f"{base}0-base/manifest.json"], "false", ""
        contents = "".join(f"<Contents><Key>{k}</Key><Size>120</Size><ETag>\"0\"</ETag>"
                           f"<StorageClass>STANDARD</StorageClass></Contents>" for k in keys)
        body = (f'<?xml version="1.0" encoding="UTF-8"?><ListBucketResult><Name>{bucket}</Name>'
                f"<Prefix>{prefix}</Prefix><KeyCount>{len(keys)}</KeyCount><MaxKeys>1000</MaxKeys>"
                f"<IsTruncated>{truncated}</IsTruncated>{token}{contents}</ListBucketResult>").encode()
        self.simple(req, 200, body, "application/xml")

    def endless(self, req: BaseHTTPRequestHandler) -> None:
        req.send_response(200)
        req.send_header("Content-Type", "application/json")
        if self.declared:
            req.send_header("Content-Length", str(1 << 30))
        else:
            req.send_header("Transfer-Encoding", "chunked")
        req.end_headers()
        sent = 0
        try:
            while True:  # until the reader hangs up
                if self.declared:
                    req.wfile.write(CHUNK)
                else:
                    req.wfile.write(b"%x\r\n%s\r\n" % (len(CHUNK), CHUNK))
                sent += len(CHUNK)
                self.body_bytes += len(CHUNK)
        except OSError:
            req.close_connection = True
        self.largest = max(self.largest, sent)

    @staticmethod
    def simple(req: BaseHTTPRequestHandler, status: int, body: bytes, ctype: str = "application/xml") -> None:
        req.send_response(status)
        req.send_header("Content-Type", ctype)
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        if req.command != "HEAD":
            req.wfile.write(body)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
