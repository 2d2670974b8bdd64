"""A tiny stand-in for the hub's /log endpoints, run as a separate process by the witness tests.

Serves files from a directory the test rewrites:
  GET  /log/checkpoint                 -> <dir>/checkpoint
  GET  /log/consistency?old=M&new=N    -> <dir>/consistency_M_N.json (404 when absent)
  POST /log/cosignature                -> appended to <dir>/cosignatures.txt, 204
Usage: python fake_log_server.py DIR ; prints "PORT <n>" on stdout once listening.
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit


def make_handler(root: Path) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path == "/log/checkpoint":
                path = root / "checkpoint"
                ctype = "text/plain; charset=utf-8"
            elif url.path == "/log/consistency":
                q = parse_qs(url.query)
                path = root / f"consistency_{int(q['old'][0])}_{int(q['new'][0])}.json"
                ctype = "application/json"
            else:
                self._send(404, b"not found")
                return
            try:
                self._send(200, path.read_bytes(), ctype)
            except FileNotFoundError:
                self._send(404, b"not found")

        def do_POST(self) -> None:
            if self.path != "/log/cosignature":
                self._send(404, b"not found")
                return
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with (root / "cosignatures.txt").open("ab") as f:
                f.write(body)
            self.send_response(204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(Path(sys.argv[1])))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
