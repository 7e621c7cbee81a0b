"""With API_KEY set: the bearer header for scripts, a signed session cookie for browsers."""

from __future__ import annotations

import pytest

from service.api.auth import COOKIE, session_token, valid_session
from tests.conftest import multipart, series_files

KEY = "s3cret-key"


@pytest.fixture
def client(make_client):
    with make_client(API_KEY=KEY, SESSION_HOURS="1") as c:
        yield c


def test_a_browser_gets_the_sign_in_form_and_then_the_pages(client) -> None:
    page = client.get("/", headers={"Accept": "text/html"})
    assert page.status_code == 401 and 'action="/login"' in page.text
    assert client.get("/").status_code == 401  # a script gets the JSON error
    wrong = client.post("/login", data={"key": "nope", "next": "/"}, follow_redirects=False)
    assert wrong.status_code == 401 and COOKIE not in wrong.cookies
    r = client.post("/login", data={"key": KEY, "next": "/docs"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/docs"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
    assert "Max-Age=3600" in cookie
    assert client.get("/").status_code == 200  # the client keeps the cookie
    assert client.get("/docs").status_code == 200


def test_the_cookie_works_for_uploads_from_the_service_only(client, series_dirs) -> None:
    client.post("/login", data={"key": KEY}, follow_redirects=False)
    files = multipart(series_files(series_dirs[0]))
    other = client.post("/v1/analyses", files=files, headers={"Origin": "http://evil.example"})
    assert other.status_code == 401
    own = client.post("/v1/analyses", files=files, headers={"Origin": "http://testserver"})
    assert own.status_code == 201, own.text
    deleted = client.delete(f"/v1/analyses/{own.json()['id']}",
                            headers={"Origin": "http://evil.example"})
    assert deleted.status_code == 401


def test_the_bearer_header_still_works_and_a_forged_cookie_does_not(client) -> None:
    client.cookies.clear()
    assert client.get("/v1/analyses", headers={"Authorization": f"Bearer {KEY}"}
                      ).status_code == 200
    client.cookies.set(COOKIE, "9999999999.deadbeef")
    assert client.get("/v1/analyses").status_code == 401
    client.cookies.set(COOKIE, session_token("another key", 3600))
    assert client.get("/v1/analyses").status_code == 401


def test_sessions_expire_and_are_bound_to_the_key() -> None:
    token = session_token(KEY, 60, now=1000.0)
    assert valid_session(KEY, token, now=1030.0)
    assert not valid_session(KEY, token, now=1061.0)
    assert not valid_session("other", token, now=1030.0)
    assert not valid_session(KEY, None) and not valid_session(KEY, "garbage")


def test_the_sign_in_form_never_redirects_elsewhere(client) -> None:
    r = client.post("/login", data={"key": KEY, "next": "//evil.example/x"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"
    r = client.post("/login", data={"key": KEY, "next": "https://evil.example"},
                    follow_redirects=False)
    assert r.headers["location"] == "/"
