"""A free TCP port for a test's process group: the suite runs on 2 pytest-xdist workers, so two launches must never
both take torch's and accelerate's default port (29500)."""

import socket


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
