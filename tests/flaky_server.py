"""A deliberately failing server for the client's retry path: a proxy to the real API that fails
the first requests in chosen ways (drops the connection before or after forwarding, answers 503),
and records what each request carried."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from tests.api_server import free_port

DROP = "drop"  # close the connection without forwarding: the API never sees the request
FORWARD_THEN_DROP = "forward-then-drop"  # the API does the work; its answer is lost
UNAVAILABLE = "503"  # answer 503 with Retry-After: 0 without forwarding


@dataclass
class Seen:
    method: str
    path: str
    idempotency_key: str | None


@dataclass
class FlakyProxy:
    """Forwards to `target`; the first requests meet `faults`, in order (then all pass)."""

    target: str
    faults: list[str] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FlakyProxy:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(port, started), daemon=True)
        self._thread.start()
        assert started.wait(10), "the flaky proxy did not start"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _serve(self, port: int, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._stop = asyncio.Event()
        self._loop.run_until_complete(self._run(port, started))
        self._loop.close()

    async def _run(self, port: int, started: threading.Event) -> None:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        async with aiohttp.ClientSession() as self._session:
            started.set()
            await self._stop.wait()
        await runner.cleanup()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host",)}
        self.seen.append(Seen(request.method, request.path, headers.get("Idempotency-Key")))
        fault = self.faults.pop(0) if self.faults else None
        if fault == UNAVAILABLE:
            return web.json_response(
                {"error": "flaky: unavailable"}, status=503, headers={"Retry-After": "0"}
            )
        if fault != DROP:
            answer = await self._forward(request, body, headers)
            if fault is None:
                return answer
        assert request.transport is not None
        request.transport.abort()  # the client sees the connection close with no answer
        return web.Response()

    async def _forward(
        self, request: web.Request, body: bytes, headers: dict[str, str]
    ) -> web.Response:
        url = self.target + request.path_qs
        async with self._session.request(
            request.method, url, data=body, headers=headers
        ) as upstream:
            passed = {
                k: v
                for k, v in upstream.headers.items()
                if k.lower() not in ("content-length", "transfer-encoding", "content-encoding")
            }
            return web.Response(body=await upstream.read(), status=upstream.status, headers=passed)
