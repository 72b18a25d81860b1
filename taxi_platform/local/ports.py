"""A free TCP port on the loopback interface, for the local servers we start."""

import socket


def free_port() -> int:
    """A port nothing listens on now; the caller binds it soon after (tests, stand-ins)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
