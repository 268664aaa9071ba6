"""The web inbox's pages for bench/run.py: an account with many conversations, a signed-in
browser's cookie, and the pages a person opens (the first and the last page of the
conversation list, a thread, a search, the contacts)."""

from __future__ import annotations

import asyncio
import re

import httpx

WEB_USER = "web@bench"
WEB_PASSWORD = "bench-web-password"
WEB_NUMBER = "447000999999"
FIRST_SENDER = 436_600_000_000
CONCURRENCY = 32


def sender(index: int) -> str:
    return str(FIRST_SENDER + index)


async def _fill(url: str, token: str, conversations: int) -> None:
    """One message from each of `conversations` senders, through /inbound/sms."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        senders = iter(range(conversations))

        async def deliver() -> None:
            for index in senders:
                text = f"web message {index} for the bench"
                answer = await client.get("/inbound/sms", params={
                    "token": token, "from": sender(index), "to": WEB_NUMBER, "text": text,
                    "id": f"web-{index}"})  # fmt: skip
                answer.raise_for_status()

        await asyncio.gather(*(deliver() for _ in range(CONCURRENCY)))


def signed_in_browser(server: object) -> str:
    """The web account, and the session cookie of its browser, signed in.

    Before measuring: a sign-in verifies the password with argon2id, whose 64 MiB would
    otherwise count as memory under load (the polls' and mysms logins are made before too).
    """
    url: str = server.url  # type: ignore[attr-defined]
    server.cli("user", "add", WEB_USER, "--password", WEB_PASSWORD,  # type: ignore[attr-defined]
               "--msisdn", WEB_NUMBER)  # fmt: skip
    with httpx.Client(base_url=url, timeout=60) as browser:
        form = browser.get("/signin").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', form)
        assert csrf is not None
        answer = browser.post("/signin", data={"csrf": csrf.group(1), "login": WEB_USER,
                                               "password": WEB_PASSWORD})  # fmt: skip
        assert answer.status_code == 303, answer.text
        return f"smsinbox_session={browser.cookies['smsinbox_session']}"


def conversations_to_open(server: object, token: str, conversations: int) -> list[str]:
    """The web account given `conversations` conversations; the pages a person opens."""
    asyncio.run(_fill(server.url, token, conversations))  # type: ignore[attr-defined]
    last_page = conversations // 50
    thread = f"/inbox/{sender(conversations // 3)}"
    return ["/inbox", f"/inbox?page={last_page // 2}", f"/inbox?page={last_page}", thread,
            "/search?q=message+77", "/contacts"]  # fmt: skip
