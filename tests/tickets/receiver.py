"""A real HTTP receiver on 127.0.0.1 for webhook tests, failing on purpose when told to."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from controller.tickets import webhooks

#: what to answer the n-th request (1-based) with; "store-then-fail" records it first
Script = Callable[[int], int | str]


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    def signed_with(self, secret: str) -> bool:
        return webhooks.verify(
            secret,
            self.headers.get(webhooks.TIMESTAMP.lower(), ""),
            self.body,
            self.headers.get(webhooks.SIGNATURE.lower(), ""),
        )


@dataclass
class Receiver:
    port: int
    script: Script
    stored: list[Received] = field(default_factory=list)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/helpline"

    def ids(self) -> list[str]:
        with self.lock:
            return [r.event["id"] for r in self.stored]

    def unique_ids(self) -> list[str]:
        return list(dict.fromkeys(self.ids()))

    def wait_for(self, count: int, seconds: float) -> list[str]:
        """Unique ids received, once there are ``count`` of them (bounded wait)."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if len(self.unique_ids()) >= count:
                break
            time.sleep(0.05)
        return self.unique_ids()


def always_ok(_n: int) -> int | str:
    return 204


@contextmanager
def receiver(script: Script = always_ok, port: int = 0) -> Iterator[Receiver]:
    """Serve on 127.0.0.1 (``port`` 0: any free one) until the block ends."""
    state = Receiver(port, script)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            with state.lock:
                state.requests += 1
                answer = state.script(state.requests)
                if answer == "store-then-fail" or (isinstance(answer, int) and answer < 300):
                    headers = {k.lower(): v for k, v in self.headers.items()}
                    state.stored.append(Received(headers, body))
            self.send_response(500 if answer == "store-then-fail" else int(answer))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
