"""A stand-in for the lab's async_server.py: asyncio, listen backlog 5, one
request per connection (it closes after each response), 404 for / and the
file for /page.html. Usage: lab_server.py PORT WWW_DIR"""
import asyncio
import os
import sys

PORT = int(sys.argv[1])
WWW = sys.argv[2]


async def handle(reader, writer):
    try:
        line = await reader.readline()
        while (await reader.readline()) not in (b"\r\n", b"\n", b""):
            pass
        parts = line.decode("latin-1").split()
        path = parts[1] if len(parts) > 1 else "/"
        print("connection from", writer.get_extra_info("peername"), path)
        if path == "/page.html":
            with open(os.path.join(WWW, "page.html"), "rb") as f:
                body = f.read()
            head = "HTTP/1.1 200 OK\r\n"
        else:
            body = b"not found\n"
            head = "HTTP/1.1 404 Not Found\r\n"
        head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        writer.write(head.encode() + body)
        await writer.drain()
    finally:
        writer.close()


async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", PORT, backlog=5)
    async with server:
        await server.serve_forever()


asyncio.run(main())
