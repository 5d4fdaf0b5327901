"""A deliberately broken HTTP/1.1 backend for the balancer's containment tests.

Usage: misbehaving.py PORT DIR  (with http_base.py beside it)

Paths: GET /            200 "port N" (the health probe), keep-alive
       GET /crash       the connection is closed without an answer
       HEAD /stray      a HEAD answer, then STRAY 150 ms later on the same connection
       GET /stray-204   204, then STRAY 150 ms later
       GET /stray-cl    200 with a complete Content-Length body, then STRAY 150 ms later
STRAY is a whole response of its own whose body is "STRAY-BYTES", so a
client that is handed it sees a well-formed answer carrying the marker.
Each time STRAY has been written (or the balancer had closed the
connection first), a line is appended to DIR/strays, so a test can wait for it.
"""
import os
import sys
import time

import http_base

PORT = int(sys.argv[1])
STRAYS = os.path.join(sys.argv[2], "strays")
STRAY = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nSTRAY-BYTES"


class Handler(http_base.Handler):
    def handle(self):
        while True:
            req = self.read_head()
            if req is None:
                return
            method, path, _ = req
            body = f"port {PORT}".encode()
            if path == "/crash":
                return
            if path == "/stray" and method == "HEAD":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n")
            elif path == "/stray-204":
                self.request.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
            elif path == "/stray-cl":
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            else:
                self.request.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                continue
            time.sleep(0.15)
            try:
                self.request.sendall(STRAY)
            except OSError:
                pass
            with open(STRAYS, "a") as f:
                f.write(f"{PORT}\n")


http_base.serve(PORT, Handler)
