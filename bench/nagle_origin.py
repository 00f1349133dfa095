"""
A kept-alive origin that writes each response's head and body in two sends
with Nagle on, as Python's http.server and many WSGI servers do: the body
waits for the head's ACK, which a receiver in request/response rhythm
delays by up to 40 ms unless it asks for a quick ACK.

Usage: python bench/nagle_origin.py --port 28180 [--size 1024]
(bench/nagle.py starts it, in front of dualproxy, nginx and haproxy).
"""

from __future__ import annotations

import argparse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def handlerFor(body: bytes):
    class TwoSends(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()  # the head: one send
            self.wfile.write(body)  # the body: another

        def log_message(self, format, *args):
            pass

    return TwoSends


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        pass  # a load generator's connection reset at the end of a run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    arguments = parser.parse_args()
    Server(("127.0.0.1", arguments.port), handlerFor(b"x" * arguments.size)).serve_forever()


if __name__ == "__main__":
    main()
