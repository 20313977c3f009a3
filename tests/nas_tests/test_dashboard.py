"""The Ray dashboard the search prints is bound to 127.0.0.1 and usable with the Ray token."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest

from nas._config import RayConfig
from nas._ray_backend import ray_session

PORT = 8366


def get(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_dashboard_is_local_and_token_protected() -> None:
    with ray_session(RayConfig(dashboard=True, dashboard_port=PORT, num_cpus=1)) as info:
        assert info.started_here and info.dashboard_url is not None
        assert info.dashboard_url.split("://")[-1] == f"127.0.0.1:{PORT}"
        hint = info.login_hint()
        assert f"http://127.0.0.1:{PORT}" in hint
        if not info.token_auth:
            pytest.skip("this Ray runs without token authentication (RAY_AUTH_MODE is set)")
        assert "ray get-auth-token" in hint
        token = (Path.home() / ".ray" / "auth_token").read_text().strip()
        api = f"http://127.0.0.1:{PORT}/api/version"
        assert get(api) in (401, 403)
        assert get(api, token) == 200


def test_a_busy_dashboard_port_is_replaced_by_a_free_one_and_said_so() -> None:
    import socket

    with socket.socket() as busy:  # another search's dashboard, say
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with ray_session(RayConfig(dashboard=True, dashboard_port=port, num_cpus=1)) as info:
            assert info.dashboard_url is not None
            used = int(info.dashboard_url.rsplit(":", 1)[1])
            assert used != port
            assert f"dashboard port {port} on 127.0.0.1 is in use" in info.note
            assert f"uses port {used} instead" in info.note and "ray.dashboard_port" in info.note
            assert get(f"http://127.0.0.1:{used}/api/version") in (200, 401, 403)


def test_a_port_taken_after_the_check_is_replaced_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two searches started at once may both find the port free; the one whose Ray then
    cannot bind it takes a free port instead of failing (the check is made to miss the
    holder here, as it would in that race)."""
    import socket

    import nas._ray_backend

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        monkeypatch.setattr(nas._ray_backend, "port_is_free", lambda host, port: True)
        with ray_session(RayConfig(dashboard=True, dashboard_port=port, num_cpus=1)) as info:
            assert info.dashboard_url is not None
            used = int(info.dashboard_url.rsplit(":", 1)[1])
            assert used != port and f"uses port {used} instead" in info.note
            assert get(f"http://127.0.0.1:{used}/api/version") in (200, 401, 403)
