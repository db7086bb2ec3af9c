"""Serve the API from a thread of the pipeline process (uvicorn, one event loop).

The API lives in the pipeline's process because it reads the warning service's state and
writes acknowledgements through it; the event loop only serves requests, and route handlers
that touch SQLite run in uvicorn's worker threads, so a slow export never stalls the
live event stream.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn
from fastapi import FastAPI

from ews.api.app import create_app, detach
from ews.api.auth import TokenStore
from ews.api.context import ApiContext
from ews.config import ApiConfig

if TYPE_CHECKING:
    from ews.pipeline import Pipeline

log = logging.getLogger(__name__)


class ApiServer:
    def __init__(self, pipeline: Pipeline, cfg: ApiConfig):
        self.cfg = cfg
        ctx = ApiContext.from_pipeline(pipeline, cfg)
        self.app = create_app(ctx, TokenStore(cfg.tokens, pipeline.regions))
        self._server = uvicorn.Server(uvicorn.Config(
            self.app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
            lifespan="off", timeout_graceful_shutdown=2, timeout_keep_alive=30,
        ))
        self._thread: threading.Thread | None = None

    @classmethod
    def for_app(cls, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> ApiServer:
        """Serve an app built elsewhere (tests, benchmarks)."""
        self = cls.__new__(cls)
        self.cfg = ApiConfig(host=host, port=port, tokens=Path("-"))
        self.app = app
        self._server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning",
                                                     access_log=False, lifespan="off", timeout_graceful_shutdown=2))
        self._thread = None
        return self

    def start(self, wait_s: float = 10.0) -> None:
        self._thread = threading.Thread(target=self._server.run, name="ews-api", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + wait_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the API could not listen on {self.cfg.host}:{self.cfg.port}")
            time.sleep(0.02)
        log.info("API and dashboard on %s (dashboard: %s/dashboard/)", self.url, self.url)

    @property
    def port(self) -> int:
        for server in self._server.servers:
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return self.cfg.port

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        detach(self.app)  # ends the event streams, so shutdown does not wait on them
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
