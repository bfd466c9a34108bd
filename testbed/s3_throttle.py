"""An S3 endpoint that throttles: a proxy on 127.0.0.1 in front of the real S3 server that, while
a burst is on, answers a share of the requests with ``503 SlowDown`` -- what S3 sends when a
prefix gets more requests than it takes -- and passes every other request through untouched.

The server behind it is real (SeaweedFS): the proxy only adds the throttling. Requests are
forwarded byte for byte, the ``Host`` header included, so signatures made for the proxy's address
still verify upstream. Used by ``tests/storage/test_s3_faults.py``.
"""

from __future__ import annotations

import http.client
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n'
    b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message>"
    b"<RequestId>facepipe-test</RequestId></Error>"
)
#: hop-by-hop headers a proxy does not forward
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


class Throttle:
    """``with Throttle(upstream_port) as t:`` -- an endpoint at ``t.url``. ``t.bursts(on_s, off_s,
    share)``: from now on, ``on_s`` seconds of throttling (``share`` of the requests answered
    SlowDown: every request when 1.0), then ``off_s`` seconds of none, over and over; ``t.calm()``
    stops it. ``t.throttled`` / ``t.passed``: requests answered SlowDown / forwarded."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.throttled = 0
        self.passed = 0
        self._lock = threading.Lock()
        self._pattern: tuple[float, float, float, float] | None = None  # start, on, off, share
        self._seen = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> Throttle:
        threading.Thread(target=self._server.serve_forever, name="s3-throttle", daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def bursts(self, on_s: float, off_s: float, share: float = 1.0) -> None:
        with self._lock:
            self._pattern = (time.monotonic(), on_s, off_s, share)

    def calm(self) -> None:
        with self._lock:
            self._pattern = None

    def _slow_down_now(self) -> bool:
        with self._lock:
            if self._pattern is None:
                self.passed += 1
                return False
            start, on, off, share = self._pattern
            if (time.monotonic() - start) % (on + off) >= on:
                self.passed += 1
                return False
            self._seen += 1  # the share, spread evenly over the burst's requests
            hit = int(self._seen * share) != int((self._seen - 1) * share)
            if hit:
                self.throttled += 1
            else:
                self.passed += 1
            return hit

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        throttle = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def _any(self) -> None:
                chunked = "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()
                if chunked:  # forwarded as it came, framing and trailers included
                    body = self._raw_chunked()
                else:
                    n = int(self.headers.get("Content-Length") or 0)
                    body = self.rfile.read(n) if n else b""
                if throttle._slow_down_now():
                    self.send_response(503, "Slow Down")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(SLOW_DOWN)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(SLOW_DOWN)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", throttle.upstream, timeout=120)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP:
                            conn.putheader(k, v)
                    if chunked:
                        conn.putheader("Transfer-Encoding", "chunked")
                        conn.endheaders()
                        conn.send(body)
                    else:
                        conn.endheaders(body)
                    r = conn.getresponse()
                    data = r.read()
                finally:
                    conn.close()
                self.send_response(r.status, r.reason)
                for k, v in r.getheaders():
                    if k.lower() not in _HOP and (k.lower() != "content-length" or self.command == "HEAD"):
                        self.send_header(k, v)  # a HEAD's length is the object's, not its (empty) body's
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _raw_chunked(self) -> bytes:
                raw = bytearray()
                while True:
                    line = self.rfile.readline()
                    raw += line
                    size = int(line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:  # trailers, up to the empty line
                            t = self.rfile.readline()
                            raw += t
                            if t in (b"\r\n", b"\n", b""):
                                return bytes(raw)
                    raw += self.rfile.read(size + 2)  # the data and its CRLF

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        return Handler
