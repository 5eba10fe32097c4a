"""``--api-key``: Qdrant's ``api-key`` header, or the page's session cookie; the page and /health stay open."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from served_world import ServedWorld, assert_error, served, serving  # noqa: F401

KEY = "s3cret-key"


@pytest.fixture(scope="module")
def locked(served: ServedWorld) -> Iterator[TestClient]:
    with serving(served, api_key=KEY) as client:
        yield client


def test_routes_need_the_key(locked: TestClient, served: ServedWorld) -> None:
    vid = served.ids[0]
    for method, url in [("POST", "/search"), ("GET", "/search?q=x"), ("GET", f"/videos/{vid}"), ("GET", f"/videos/{vid}/media"),
                        ("GET", f"/videos/{vid}/thumbnail"), ("GET", "/metrics"), ("GET", "/fields"), ("POST", "/session")]:
        for headers in ({}, {"api-key": "wrong"}, {"api-key": KEY + "x"}, {"Authorization": f"Bearer {KEY}"}):
            r = locked.request(method, url, headers=headers, json={"query": "x"} if method == "POST" else None)
            assert_error(r, 401, "unauthorized")
    assert locked.get("/").status_code == 200 and locked.get("/health").status_code == 200


def test_the_header_or_the_session_cookie_opens_them(locked: TestClient, served: ServedWorld) -> None:
    vid = served.ids[0]
    r = locked.post("/search", json={"query": "a circle", "limit": 2}, headers={"api-key": KEY})
    assert r.status_code == 200 and len(r.json()["hits"]) == 2
    session = locked.post("/session", headers={"api-key": KEY})
    assert session.status_code == 204
    cookie = session.cookies.get("vtr_session")
    assert cookie and KEY not in cookie and "httponly" in session.headers["set-cookie"].lower()
    media = locked.get(f"/videos/{vid}/media", headers={"Range": "bytes=0-9"})  # the client keeps the cookie
    assert media.status_code == 206 and media.headers["cache-control"].startswith("private")
    locked.cookies.set("vtr_session", cookie[:-1] + ("1" if cookie[-1] == "0" else "0"))
    try:
        assert_error(locked.get(f"/videos/{vid}/media"), 401)
    finally:
        locked.cookies.clear()
