#!/usr/bin/env python3
"""An independent fixed-latency engine for checking `kvbench calibrate`.

It shares no code with kvbench-sim: plain asyncio and HTTP/1.1 written by hand. It answers
OpenAI-style streaming `/v1/chat/completions` and `/v1/completions`: the first token
`--ttft-ms` after the request line arrived, then one token every `--itl-ms`, and it stamps
the first token's `kvbench_server_ttft_us` (arrival to the moment its bytes are handed to
the socket) immediately before writing them. `/health` and `/v1/models` answer as an
engine's do. kvbench's overhead against it is the client's TTFT minus that stamp:

    python3 scripts/stamping_mock.py --port 18500 --ttft-ms 50 --itl-ms 20 &
    ./target/release/kvbench calibrate --engine http://127.0.0.1:18500 --concurrency 256 --itl-ms 20

Standard library only (Python 3.8+).
"""

import argparse
import asyncio
import json
import time


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def event(obj) -> bytes:
    return chunk(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


async def stream(writer, req, arrived_ns, chat, args):
    n = int(req.get("max_tokens") or req.get("max_completion_tokens") or 16)
    model = req.get("model", "mock")
    obj = "chat.completion.chunk" if chat else "text_completion"
    head = {"id": "mock-1", "object": obj, "created": int(time.time()), "model": model}
    writer.write(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
        b"transfer-encoding: chunked\r\n\r\n"
    )
    if chat:
        first = dict(head, choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
        writer.write(event(first))
    await writer.drain()
    due = arrived_ns / 1e9 + args.ttft_ms / 1000.0
    for i in range(n):
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        text = "tok" if i == 0 else " tok"
        finish = "length" if i + 1 == n else None
        choice = {"index": 0, "delta": {"content": text}, "finish_reason": finish} if chat else {"index": 0, "text": text, "finish_reason": finish}
        e = dict(head, choices=[choice])
        if i == 0:
            e["kvbench_server_ttft_us"] = (time.perf_counter_ns() - arrived_ns) // 1000
        writer.write(event(e))
        await writer.drain()
        due += args.itl_ms / 1000.0
    usage = {"prompt_tokens": 16, "completion_tokens": n, "total_tokens": 16 + n}
    writer.write(event(dict(head, choices=[], usage=usage)))
    writer.write(chunk(b"data: [DONE]\n\n") + b"0\r\n\r\n")
    await writer.drain()


def plain(status: str, body: bytes, ctype=b"application/json") -> bytes:
    return (
        b"HTTP/1.1 " + status.encode() + b"\r\ncontent-type: " + ctype
        + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )


async def handle(reader, writer, args):
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            arrived_ns = time.perf_counter_ns()
            headers = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(length) if length else b""
            parts = line.decode("latin-1").split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            if path.startswith("/v1/chat/completions") or path.startswith("/v1/completions"):
                req = json.loads(body or b"{}")
                await stream(writer, req, arrived_ns, path.startswith("/v1/chat"), args)
            elif path == "/health":
                writer.write(plain("200 OK", b""))
            elif path == "/v1/models":
                writer.write(plain("200 OK", json.dumps({"object": "list", "data": [{"id": "mock", "object": "model"}]}).encode()))
            else:
                writer.write(plain("404 Not Found", b"{}"))
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=18500)
    p.add_argument("--ttft-ms", type=float, default=50.0)
    p.add_argument("--itl-ms", type=float, default=20.0)
    args = p.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, args), args.host, args.port, backlog=4096)
    print(f"stamping mock listening on {args.host}:{args.port}", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
