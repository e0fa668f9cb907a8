"""Our clients against a real HTTP server on 127.0.0.1 that sheds load: they wait the `Retry-After`
the server asks for (not their own backoff), give up when their wait budget would be exceeded, and send
their deadline as `X-Request-Timeout`."""

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from mrm_ray.serve.client import AsyncRewardClient, Backoff, RewardClient, RewardError, retry_after

RESULT = {"reward": 0.25, "model_reward": 0.25, "scores": {"m": 0.25}, "std": 0.0, "matched_reference": None}


class Shedding:
    """Answers the first `shed` requests 503 with `Retry-After: <retry_after>`, then 200."""

    def __init__(self, shed: int, retry_after: str = "1") -> None:
        self.arrivals: list[tuple[float, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                outer.arrivals.append((time.monotonic(), dict(self.headers)))
                if len(outer.arrivals) <= shed:
                    body, status = b'{"error": "overloaded, shed"}', 503
                else:
                    body, status = json.dumps({"results": [RESULT]}).encode(), 200
                self.send_response(status)
                if status == 503:
                    self.send_header("Retry-After", retry_after)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def gaps(self) -> list[float]:
        times = [t for t, _ in self.arrivals]
        return [b - a for a, b in zip(times, times[1:])]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def shedding():
    servers = []

    def make(shed: int, retry_after: str = "1") -> Shedding:
        servers.append(Shedding(shed, retry_after))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


ITEM = {"prompt": "Q?", "response": "A."}


def test_the_sync_client_waits_the_retry_after_it_is_given(shedding):
    server = shedding(2, "1")
    assert RewardClient(server.url, retries=5).score([ITEM]) == [RESULT]
    assert len(server.arrivals) == 3
    assert all(gap >= 0.95 for gap in server.gaps()), server.gaps()  # its own backoff would start at 0.5 s


def test_the_async_client_waits_the_retry_after_and_sends_its_deadline(shedding):
    server = shedding(1, "1")

    async def score():
        async with AsyncRewardClient(server.url, max_wait_s=30) as client:
            return await client.score([ITEM], timeout_s=2.5)

    assert asyncio.run(score()) == [RESULT]
    assert len(server.arrivals) == 2 and server.gaps()[0] >= 0.95
    assert all(headers["X-Request-Timeout"] == "2.5" for _, headers in server.arrivals)


def test_a_client_whose_wait_budget_is_spent_reports_the_503(shedding):
    server = shedding(100, "1")

    async def score():
        async with AsyncRewardClient(server.url, max_wait_s=1.5) as client:
            return await client.score([ITEM])

    with pytest.raises(RewardError, match="503.*overloaded"):
        asyncio.run(score())
    assert 2 <= len(server.arrivals) <= 3  # retried after each Retry-After until 1.5 s had passed
    with pytest.raises(RewardError, match="503"):
        RewardClient(server.url, retries=1).score([ITEM])


def test_retry_after_and_backoff():
    assert retry_after({"Retry-After": "3"}) == 3.0 and retry_after({}) is None
    assert retry_after({"Retry-After": "Wed, 21 Oct 2026 07:28:00 GMT"}) is None  # the date form: own backoff
    backoff = Backoff(retries=3, max_wait_s=None)
    assert [backoff.delay(None), backoff.delay(2.0), backoff.delay(None), backoff.delay(None)] == [0.5, 2.0, 2.0,
                                                                                                    None]


def test_rollouts_sharing_a_prompt_go_as_one_group_in_order():
    from mrm_ray.serve.client import group_items

    a = {"prompt": "p", "images": [b"img"], "reference": "4"}
    items = [{**a, "response": "x"}, {**a, "response": "y"}, {**a, "response": ""},  # empty: alone
             {**a, "response": "z"}, {**a, "response": "w", "reference": "5"},  # another reference: new group
             {"prompt": "q", "response": "v"}]
    out = group_items(items, max_responses=16)
    assert out == [{**a, "responses": ["x", "y"]}, {**a, "response": ""}, {**a, "response": "z"},
                   {**a, "response": "w", "reference": "5"}, {"prompt": "q", "response": "v"}]
    sizes = [len(g.get("responses", [0])) for g in group_items([{**a, "response": "r"}] * 5, max_responses=2)]
    assert sizes == [2, 2, 1]
