"""Fixtures for the Case 1 evidence: the image corpus and real classification servers on loopback."""
from __future__ import annotations

import socket
import threading

import pytest

from workbench.classifier_server import ClassifierServer
from workbench.image_corpus import build_corpus


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    """(directory, entries) of the deterministic corpus; tests must not modify it."""
    root = tmp_path_factory.mktemp("corpus")
    return root, build_corpus(root)


@pytest.fixture
def start_server():
    """Factory: start a classification server with the given options; all are stopped afterwards."""
    servers = []

    def start(**options) -> ClassifierServer:
        server = ClassifierServer(**options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(start_server):
    """A server with the assignment's latencies (30 ms classify, 10 ms stats)."""
    return start_server()


@pytest.fixture
def silent_endpoint():
    """A loopback listener that accepts connections and never answers; yields its base URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(10)
    accepted: list[socket.socket] = []

    def accept():
        try:
            conn, _ = listener.accept()
            accepted.append(conn)
        except OSError:
            pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    host, port = listener.getsockname()

    def release():
        """Drop the held connections so a client still waiting gets an error."""
        thread.join(timeout=10)
        for conn in accepted:
            conn.close()

    yield f"http://{host}:{port}", release
    release()
    listener.close()
