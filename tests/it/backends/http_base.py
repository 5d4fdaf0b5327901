"""What the Python test backends share: a reader of keep-alive HTTP/1.1
request heads and the threaded loopback server.

The harness writes this file beside the backend script, which imports it,
subclasses Handler (its handle() loops on read_head()) and calls
serve(PORT, ItsHandler).
"""
import socketserver


class Handler(socketserver.BaseRequestHandler):
    def setup(self):
        # What has been read past the last request head.
        self.buf = b""

    def read_head(self):
        """The next request's (method, path, headers by lowercase name), or
        None when the client closed first. A body stays in self.buf and the
        socket, for the caller to read."""
        while b"\r\n\r\n" not in self.buf:
            data = self.request.recv(65536)
            if not data:
                return None
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        return method, path, headers


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def serve(port, handler):
    Server(("127.0.0.1", port), handler).serve_forever()
