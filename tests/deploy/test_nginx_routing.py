"""deploy/nginx/nginx.conf routing, run for real on loopback: two stand-in replicas
that answer their own name, nginx in front with the compose file's configuration.
The affinity cookie picks its replica; without it, X-Voice-Session-Id is hashed, so
a cookie-less client's calls for one session keep reaching one replica."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import threading
import time

import httpx
import pytest

from tests.deploy.support import DEPLOY, nginx_renderer
from tests.support import free_port

pytestmark = pytest.mark.skipif(
    not shutil.which("nginx"), reason="nginx is not installed (scripts/services.sh installs it)"
)

REPLICAS = ("web-1", "web-2")
REQUESTS = 12


class _NamedReplica(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        body = self.server.replica_name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def proxy(tmp_path):
    servers = []
    for name in REPLICAS:
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NamedReplica)
        server.replica_name = name
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    port = free_port()
    conf = nginx_renderer().render(
        (DEPLOY / "nginx/nginx.conf").read_text(),
        listen=port,
        upstreams={name: s.server_port for name, s in zip(REPLICAS, servers, strict=True)},
        prefix=tmp_path,
    )
    (tmp_path / "nginx.conf").write_text(conf)
    nginx = subprocess.Popen(
        ["nginx", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")]
        + ["-g", "daemon off; error_log stderr;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"{url}/nginx-health", timeout=1)
            break
        except httpx.TransportError as exc:
            if nginx.poll() is not None or time.monotonic() > deadline:
                nginx.kill()
                message = f"nginx did not start: {nginx.stderr.read().decode()}"
                raise AssertionError(message) from exc
            time.sleep(0.05)
    yield url
    nginx.terminate()
    nginx.wait(10)
    for server in servers:
        server.shutdown()
        server.server_close()


def _replicas(url: str, **request) -> list[str]:
    with httpx.Client(base_url=url, timeout=5) as client:
        return [client.get("/tools/x", **request).text for _ in range(REQUESTS)]


def test_a_cookie_less_session_keeps_reaching_one_replica_by_its_header(proxy):
    by_session = {
        session: set(_replicas(proxy, headers={"X-Voice-Session-Id": session}))
        # Enough sessions that the hash ring (built on the replicas' addresses, whose
        # ports change every run) puts some on each: 8 all landed on one, once.
        for session in (f"session-{n}" for n in range(32))
    }

    assert all(len(replicas) == 1 for replicas in by_session.values()), by_session
    # Different sessions still spread over the replicas.
    assert set().union(*by_session.values()) == set(REPLICAS)


def test_the_affinity_cookie_wins_over_the_header(proxy):
    for name in REPLICAS:
        seen = _replicas(
            proxy,
            headers={"X-Voice-Session-Id": "session-0", "Cookie": f"VOICE_AFFINITY={name}"},
        )

        assert set(seen) == {name}


def test_with_neither_requests_are_spread_round_robin(proxy):
    assert set(_replicas(proxy)) == set(REPLICAS)
