"""Helpers shared by the parity tests (importable because pytest puts tests/ on sys.path)."""

import torch


def randomize(model: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Far-from-init weights, so activations are large enough to tell GELU variants apart."""
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model


class LiveServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread (tests only)."""

    def __init__(self, app):
        import socket
        import threading

        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "LiveServer":
        import time

        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
