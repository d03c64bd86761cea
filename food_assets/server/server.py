"""Running the app: the bind rules (loopback by default, a bearer token anywhere else), uvicorn
with a graceful shutdown, and a handle that runs a server in a thread (tests, benchmarks).
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from food_assets.ml.errors import ConfigError
from food_assets.server.app import ServerSettings, ServerState, create_app

TOKEN_ENV = "FOOD_ASSETS_SERVE_TOKEN"
#: How long a shutdown (SIGTERM, Ctrl-C) waits for requests in flight.
DEFAULT_GRACEFUL_S = 30.0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve anywhere


def read_token(token_file: Path | None = None) -> str | None:
    """The bearer token: the file's first line when given, else FOOD_ASSETS_SERVE_TOKEN."""
    if token_file is not None:
        try:
            text = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"--token-file {token_file}: {exc.strerror or exc}") from None
        if not text:
            raise ConfigError(f"--token-file {token_file} is empty")
        return text.splitlines()[0].strip()
    return os.environ.get(TOKEN_ENV, "").strip() or None


def check_bind(host: str, token: str | None, unsafe_no_auth: bool) -> None:
    """Binding past loopback needs a token, unless the user said it is unsafe and meant it."""
    if is_loopback(host) or token or unsafe_no_auth:
        return
    raise ConfigError(
        f"--host {host} is reachable from other machines: set a bearer token "
        f"({TOKEN_ENV} or --token-file), or pass --unsafe-no-auth to serve without one"
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one, read back with `getsockname`)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    return sock


class Server:
    """One uvicorn server over one socket. `run()` blocks (signals handled there when on the
    main thread: SIGTERM or Ctrl-C finish the requests in flight, then exit); `start()` runs it
    in a thread and waits until it listens."""

    def __init__(
        self,
        settings: ServerSettings,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        graceful_s: float = DEFAULT_GRACEFUL_S,
        log_level: str = "warning",
    ) -> None:
        import uvicorn

        self.settings = settings
        self.state = ServerState(settings, on_fatal=self._fatal)
        self.app = create_app(settings, self.state)
        self.sock = bind(host, port)
        self.host, self.port = host, self.sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level=log_level,
            access_log=False,
            timeout_graceful_shutdown=graceful_s,
            lifespan="on",
        )
        self.uvicorn = uvicorn.Server(config)
        self.fatal: str | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def _fatal(self, message: str) -> None:
        self.fatal = message
        self.uvicorn.should_exit = True

    def run(self) -> None:
        self.uvicorn.run(sockets=[self.sock])

    def start(self, timeout_s: float = 30.0) -> Server:
        self._thread = threading.Thread(target=self.run, name="uvicorn", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.uvicorn.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the server did not start ({self.fatal or 'timeout'})")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout_s: float = 60.0) -> Server:
        deadline = time.monotonic() + timeout_s
        while self.state.slot.current is None:
            if self.fatal or time.monotonic() > deadline:
                raise RuntimeError(f"the model did not load ({self.fatal or 'timeout'})")
            time.sleep(0.02)
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self.uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve(
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    graceful_s: float = DEFAULT_GRACEFUL_S,
    announce: Callable[[str], None] = print,
) -> str | None:
    """Serve until a signal; returns the fatal error (the model did not load), else None."""
    server = Server(settings, host=host, port=port, graceful_s=graceful_s, log_level="info")
    announce(f"listening on {server.url} (docs: {server.url}/docs); loading the model...")
    server.run()
    return server.fatal
