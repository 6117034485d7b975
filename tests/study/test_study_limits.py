"""The real waitress server on 127.0.0.1 under idle connections, and the Host check behind a proxy.

Loopback only; every socket and request has a timeout, every loop a fixed length, and everything opened
is closed (waitress's loop ends only once no connection is left open).
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager

import pytest

from hyperfit.study.server import make_server
from study_fixtures import tokens

IDLE_SOCKETS = 120  # more than waitress's default connection_limit of 100
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never route loopback via a proxy


@contextmanager
def serving(study, **options):
    server = make_server(study, "127.0.0.1", 0, threads=4, **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.effective_port}"
    finally:
        server.close()
        thread.join(timeout=10)


def status(url: str, headers: dict | None = None) -> int:
    try:
        with OPENER.open(urllib.request.Request(url, headers=headers or {}), timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def test_idle_connections_do_not_lock_annotators_out(study):
    with serving(study) as (server, base):
        assert server.adj.connection_limit >= 500 and server.adj.channel_timeout <= 30
        idle = []
        try:
            for _ in range(IDLE_SOCKETS):  # connect and say nothing, like a slow or hostile client
                idle.append(socket.create_connection(("127.0.0.1", server.effective_port), timeout=2))
            start = time.monotonic()
            # With waitress's defaults this waits behind the idle sockets until they time out (~2 min).
            assert status(f"{base}/a/{tokens(study)['ann-1']}") == 200
            assert time.monotonic() - start < 5
        finally:
            for sock in idle:
                sock.close()


def test_forwarded_host_counts_only_from_the_trusted_proxy(study):
    page = f"/a/{tokens(study)['ann-1']}"
    rebinding = {"X-Forwarded-Host": "evil.example"}
    with serving(study) as (_, base):  # no trusted proxy: the header is nobody's word, ignored
        assert status(base + page, rebinding) == 200
    with serving(study, trusted_proxy="127.0.0.1", allowed=["study.example.org"]) as (_, base):
        assert status(base + page, rebinding) == 400
        assert status(base + page, {"X-Forwarded-Host": "study.example.org",
                                    "X-Forwarded-Proto": "https"}) == 200


def test_serving_on_a_busy_port_is_one_clear_error(study):
    # It printed an OSError traceback.
    import socket

    from hyperfit.study import StudyError
    from hyperfit.study.server import make_server

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(StudyError, match=rf"port {port}.*--port"):
            make_server(study, "127.0.0.1", port)
