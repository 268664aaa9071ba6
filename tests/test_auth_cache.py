"""Polling clients send their password on every request: argon2 runs once per burst."""

from __future__ import annotations

import asyncio

import pytest

from smsinbox.config import Settings
from smsinbox.core import auth
from smsinbox.core.caller import Caller
from smsinbox.errors import AuthenticationFailed
from smsinbox.services import Services


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, login_failure_delay=0.0)


class Verifications:
    """Counts the argon2 checks the authenticator starts; clearing `held` stops them before
    they finish, until it is set again."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        self.held = asyncio.Event()
        self.held.set()
        self._real = auth.verify_password
        monkeypatch.setattr(auth, "verify_password", self._counted)

    async def _counted(self, password_hash: str, password: str) -> bool:
        self.calls += 1
        await self.held.wait()
        return await self._real(password_hash, password)


async def test_concurrent_polls_of_one_account_share_one_verification(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.accounts.add("alice", "pw")
    verifications = Verifications(monkeypatch)
    authenticator = services.inbox.authenticator
    caller = Caller.of("mc5", ("127.0.0.1", 1))
    accounts = await asyncio.gather(
        *(authenticator.authenticate("alice", "pw", caller) for _ in range(20))
    )
    assert {account.username for account in accounts} == {"alice"}
    assert verifications.calls == 1
    wrong = await asyncio.gather(
        *(authenticator.authenticate("alice", "nope", caller) for _ in range(5)),
        return_exceptions=True,
    )
    assert all(isinstance(answer, Exception) for answer in wrong)
    assert verifications.calls == 2


async def test_a_steady_poller_is_verified_once_and_an_idle_pair_is_forgotten(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.accounts.add("alice", "pw")
    verifications = Verifications(monkeypatch)
    authenticator = services.inbox.authenticator
    authenticator.cache_ttl = 0.4
    caller = Caller.of("mc5", ("127.0.0.1", 1))
    await authenticator.authenticate("alice", "pw", caller)
    for _ in range(4):  # polls 0.2 s apart, past the first check's remembered time
        await asyncio.sleep(0.2)
        await authenticator.authenticate("alice", "pw", caller)
    assert verifications.calls == 1
    await asyncio.sleep(0.5)  # unused for longer than the remembered time
    await authenticator.authenticate("alice", "pw", caller)
    assert verifications.calls == 2


async def test_a_remembered_pair_is_refused_once_the_password_changes(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.accounts.add("alice", "pw")
    verifications = Verifications(monkeypatch)
    authenticator = services.inbox.authenticator
    caller = Caller.of("mc5", ("127.0.0.1", 1))
    await authenticator.authenticate("alice", "pw", caller)
    await services.accounts.change_password("alice", "new")
    with pytest.raises(AuthenticationFailed):
        await authenticator.authenticate("alice", "pw", caller)
    assert (await authenticator.authenticate("alice", "new", caller)).username == "alice"
    assert verifications.calls == 3


async def test_argon2_runs_on_a_bounded_pool() -> None:
    from smsinbox.core import passwords

    hashed = await passwords.hash_password("pw")
    assert await passwords.verify_password(hashed, "pw")
    assert not await passwords.verify_password(hashed, "other")
    assert passwords.ARGON2_THREADS >= 1
    assert passwords._argon2_pool._max_workers == passwords.ARGON2_THREADS
