"""A small HTTP/1.1 backend for the balancer's integration tests.

Usage: http_backend.py PORT DIR  (with http_base.py beside it;
       a file DIR/slow-PORT makes /work slow)

Paths: GET /          200 "port N" (the health probe), keep-alive
       POST /echo     the request body streamed back (same Content-Length)
       GET /work      200, after 400 ms when DIR/slow-PORT exists
       GET /never     reads the request and never answers
       GET /close10   an HTTP/1.0 answer without Content-Length, then close
       GET /ws        with Connection: Upgrade -> 101, then echoes bytes
Every answer carries X-Fleet-Backend: PORT.
"""
import os
import socket
import sys
import time

import http_base

PORT = int(sys.argv[1])
SLOW_FILE = os.path.join(sys.argv[2], f"slow-{PORT}")


class Handler(http_base.Handler):
    def send(self, status, body, extra=""):
        self.request.sendall(
            (
                f"HTTP/1.1 {status}\r\nX-Fleet-Backend: {PORT}\r\n"
                f"Content-Length: {len(body)}\r\n{extra}\r\n"
            ).encode()
            + body
        )

    def handle(self):
        while True:
            req = self.read_head()
            if req is None:
                return
            method, path, headers = req
            if path == "/echo":
                n = int(headers.get("content-length", "0"))
                self.request.sendall(
                    f"HTTP/1.1 200 OK\r\nX-Fleet-Backend: {PORT}\r\nContent-Length: {n}\r\n\r\n".encode()
                )
                left = n
                if self.buf:
                    part, self.buf = self.buf[:left], self.buf[left:]
                    self.request.sendall(part)
                    left -= len(part)
                while left > 0:
                    data = self.request.recv(min(left, 65536))
                    if not data:
                        return
                    self.request.sendall(data)
                    left -= len(data)
            elif path == "/work":
                if os.path.exists(SLOW_FILE):
                    time.sleep(0.4)
                self.send("200 OK", b"worked")
            elif path == "/never":
                while self.request.recv(65536):
                    pass
                return
            elif path == "/close10":
                self.request.sendall(
                    f"HTTP/1.0 200 OK\r\nX-Fleet-Backend: {PORT}\r\n\r\nclose-delimited from {PORT}".encode()
                )
                self.request.shutdown(socket.SHUT_WR)
                return
            elif path == "/ws" and "upgrade" in headers.get("connection", "").lower():
                self.request.sendall(
                    f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {headers.get('upgrade', '')}\r\nX-Fleet-Backend: {PORT}\r\n\r\n".encode()
                )
                if self.buf:
                    self.request.sendall(self.buf)
                while True:
                    data = self.request.recv(65536)
                    if not data:
                        return
                    self.request.sendall(data)
            else:
                self.send("200 OK", f"port {PORT}".encode())


http_base.serve(PORT, Handler)
