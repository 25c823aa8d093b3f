"""The least one Python HTTP hop costs on this machine: uvicorn (uvloop, httptools) serving a bare ASGI
function that sends each request's body to the upstream with aiohttp's client (one pooled session) and
passes the answer back as it comes. No routing, validation, metrics, logs, faults or limits: the floor that
any Python gateway (the wrapper, LiteLLM) builds on, measured beside nginx's (the floor in C) by
`bench/gateways.py`. Not a gateway anyone should deploy.

    python -m bench.python_hop --port PORT --upstream http://127.0.0.1:MODEL_PORT
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn


class PassThrough:
    """The ASGI app: POST {upstream}{path} with the request's body and content type, answer with the
    upstream's status, content type and body chunks."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if self.session is not None:
                        await self.session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert self.session is not None
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        content_type = next((v for k, v in scope["headers"] if k == b"content-type"), b"application/json")
        async with self.session.request(
            scope["method"], self.upstream + scope["path"], data=body,
            headers={"Content-Type": content_type.decode("latin-1")},
        ) as answer:  # fmt: skip
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": [(b"content-type", answer.headers.get("Content-Type", "").encode("latin-1"))],
                }
            )
            async for chunk in answer.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})


def main(argv: list[str] | None = None) -> None:
    about = (__doc__ or "").split("\n\n")[0]
    ap = argparse.ArgumentParser(prog="python -m bench.python_hop", description=about)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="the model server's base URL")
    args = ap.parse_args(argv)
    uvicorn.run(
        PassThrough(args.upstream), host="127.0.0.1", port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
