"""A browser's side of the web inbox, over HTTP: cookies, the sign-in form, CSRF fields."""

from __future__ import annotations

import re

import httpx

_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "no CSRF field on the page"
    return found.group(1)


class WebClient:
    """One browser: its own cookie jar over a shared server address."""

    def __init__(self, base_url: str) -> None:
        self.http = httpx.AsyncClient(base_url=base_url, timeout=30, follow_redirects=False)
        self.csrf = ""

    async def __aenter__(self) -> WebClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.http.aclose()

    async def sign_in(self, login: str, password: str) -> httpx.Response:
        """The sign-in form as a person fills it in; the answer to the POST."""
        form = await self.http.get("/signin")
        answer = await self.http.post(
            "/signin", data={"csrf": csrf_of(form.text), "login": login, "password": password}
        )
        if answer.status_code == 303:
            self.csrf = csrf_of((await self.http.get("/inbox")).text)
        return answer

    async def get(self, path: str, **params: str) -> httpx.Response:
        # httpx replaces a query in the path with `params`, even an empty one.
        return await self.http.get(path, params=params) if params else await self.http.get(path)

    async def post(self, path: str, **fields: str) -> httpx.Response:
        """A form of a signed-in page: its CSRF field filled in."""
        return await self.http.post(path, data={"csrf": self.csrf, **fields})
