"""uvicorn in a background thread, on a socket of ours (port 0 picks a free one)."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any


class ServerThread:
    """uvicorn serving an ASGI app on a socket of ours, in a daemon thread."""

    def __init__(
        self, app: Any, host: str, port: int, log_level: str, ssl_certfile: str | None, ssl_keyfile: str | None
    ) -> None:
        import uvicorn

        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        scheme = "https" if ssl_certfile else "http"
        self.url = f"{scheme}://{host}:{sock.getsockname()[1]}"
        config = uvicorn.Config(
            app,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=60,
            timeout_graceful_shutdown=1,
            ssl_certfile=ssl_certfile,
            ssl_keyfile=ssl_keyfile,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
