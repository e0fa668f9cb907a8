"""A real HTTP proxy in front of the reward service whose availability a test controls."""

from __future__ import annotations

import asyncio
import socket
import threading


class FlakyProxy:
    """Forwards every request to `target`. After `outage_after` forwarded requests the next
    `outage_requests` are answered 503 (a brief outage); after `down_after` forwarded
    requests every request is (the service stays down). Counting successes keeps the
    schedule exact whatever the client's retry timing."""

    def __init__(self, target: str) -> None:
        from aiohttp import ClientSession, web

        self.target = target.rstrip("/")
        self.outage_after = self.down_after = None
        self.outage_requests = 0
        self.forwarded = self.refused = 0
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def handle(request):
            if self._refuse():
                self.refused += 1
                return web.Response(status=503, text="reward service unavailable (test)")
            async with ClientSession() as session:
                async with session.request(request.method, self.target + request.path_qs, data=await request.read(),
                                           headers={k: v for k, v in request.headers.items()
                                                    if k.lower() in ("content-type", "authorization")}) as r:
                    self.forwarded += 1
                    return web.Response(status=r.status, body=await r.read(), content_type=r.content_type)

        async def start():
            app = web.Application(client_max_size=64 * 2**20)
            app.router.add_route("*", "/{tail:.*}", handle)
            self.runner = web.AppRunner(app)
            await self.runner.setup()
            await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()), self.loop.run_forever()),
                                       daemon=True)
        self.thread.start()
        ready.wait(10)

    def _refuse(self) -> bool:
        if self.down_after is not None and self.forwarded >= self.down_after:
            return True
        if self.outage_after is not None and self.forwarded >= self.outage_after and self.outage_requests > 0:
            self.outage_requests -= 1
            return True
        return False

    def schedule(self, *, outage_after: int | None = None, outage_requests: int = 0,
                 down_after: int | None = None) -> None:
        self.outage_after, self.outage_requests, self.down_after = outage_after, outage_requests, down_after

    def up(self) -> None:
        self.schedule()

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
