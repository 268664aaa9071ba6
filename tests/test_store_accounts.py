"""Accounts, numbers and secrets, on both engines."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select

from smsinbox.core.credentials import Credentials
from smsinbox.core.passwords import verify_password
from smsinbox.errors import AlreadyExists, InvalidInput, InvalidState, NotFound
from smsinbox.models import AccountStatus
from smsinbox.services import Services
from smsinbox.store import tables as t


async def test_account_keeps_its_attributes_and_an_argon2id_hash(services: Services) -> None:
    account = await services.accounts.add(
        "1234321@reseller",
        "s3cret",
        msisdns=("+61 411 001 001", "61411001002"),
        time_zone="Australia/Sydney",
        reseller="reseller",
    )
    assert account.username == "1234321@reseller"
    assert account.status is AccountStatus.ACTIVE
    assert account.time_zone == "Australia/Sydney"
    assert account.password_hash.startswith("$argon2id$")
    assert await verify_password(account.password_hash, "s3cret")
    assert not await verify_password(account.password_hash, "wrong")
    [summary] = await services.store.list_accounts()
    assert summary.msisdns == ("61411001001", "61411001002")
    assert summary.reseller == "reseller"


async def test_new_accounts_get_the_default_time_zone(services: Services) -> None:
    account = await services.accounts.add("bob", "pw")
    assert account.time_zone == "UTC"


@pytest.mark.parametrize("username", ["two words", "", "tab\there", "x" * 129])
async def test_usernames_without_spaces_only(services: Services, username: str) -> None:
    with pytest.raises(InvalidInput):
        await services.accounts.add(username, "pw")


async def test_username_and_numbers_are_unique(services: Services) -> None:
    await services.accounts.add("alice", "pw", msisdns=("447700900001",))
    with pytest.raises(AlreadyExists, match="alice"):
        await services.accounts.add("alice", "pw")
    with pytest.raises(AlreadyExists, match="447700900001 already belongs to alice"):
        await services.accounts.add("bob", "pw", msisdns=("447700900001",))
    # The failed creation left nothing behind.
    assert [a.username for a in await services.store.list_accounts()] == ["alice"]


async def test_numbers_move_between_accounts_only_when_free(services: Services) -> None:
    await services.accounts.add("alice", "pw", msisdns=("111",))
    await services.accounts.add("bob", "pw")
    with pytest.raises(AlreadyExists):
        await services.accounts.add_number("111", "bob")
    await services.accounts.remove_number("111")
    await services.accounts.add_number("+111", "bob")
    owners = {a.username: a.msisdns for a in await services.store.list_accounts()}
    assert owners == {"alice": (), "bob": ("111",)}
    with pytest.raises(NotFound):
        await services.accounts.remove_number("999")
    with pytest.raises(NotFound):
        await services.accounts.add_number("222", "nobody")


async def test_status_changes(services: Services) -> None:
    await services.accounts.add("carol", "pw", status=AccountStatus.NEEDS_ACTIVATION)

    async def status() -> AccountStatus:
        account = await services.store.get_account("carol")
        assert account is not None
        return account.status

    with pytest.raises(InvalidState, match="carol is needs_activation, not blocked"):
        await services.accounts.unblock("carol")
    await services.accounts.activate("carol")
    assert await status() is AccountStatus.ACTIVE
    with pytest.raises(InvalidState):
        await services.accounts.activate("carol")
    await services.accounts.block("carol")
    assert await status() is AccountStatus.BLOCKED
    with pytest.raises(InvalidState):
        await services.accounts.activate("carol")  # activation does not unblock
    await services.accounts.unblock("carol")
    assert await status() is AccountStatus.ACTIVE
    with pytest.raises(NotFound):
        await services.accounts.block("nobody")


async def test_password_change_revokes_auth_tokens(services: Services) -> None:
    account = await services.accounts.add("dave", "old")
    key, _ = await services.api_keys.create("app")
    async with services.store.db.transaction("test_issue_token") as connection:
        await connection.execute(
            insert(t.auth_tokens).values(
                account_id=account.id,
                api_key_id=key.id,
                token_hash="0" * 64,
                created_at=1,
                expires_at=2**40,
            )
        )
    await services.accounts.change_password("dave", "new")
    changed = await services.store.get_account("dave")
    assert changed is not None and await verify_password(changed.password_hash, "new")
    async with services.store.db.snapshot("test_read_tokens") as connection:
        revoked = await connection.scalar(select(t.auth_tokens.c.revoked_at))
    assert revoked is not None


async def test_secrets_are_stored_hashed_and_revocable(services: Services) -> None:
    credential, secret = await services.upstreams.create("kannel-1")
    assert secret.startswith("up_") and len(secret) > 40
    async with services.store.db.snapshot("test_read_hash") as connection:
        stored = await connection.scalar(select(t.upstreams.c.token_hash))
    assert stored != secret and secret not in str(stored)
    found = await services.upstreams.recognise(secret)
    assert found is not None and found.id == credential.id
    assert await services.upstreams.recognise(secret + "x") is None
    assert await services.api_keys.recognise(secret) is None  # kinds do not mix
    with pytest.raises(AlreadyExists):
        await services.upstreams.create("kannel-1")
    await services.upstreams.revoke("kannel-1")
    assert await services.upstreams.recognise(secret) is None
    [listed] = await services.upstreams.list()
    assert listed.revoked_at is not None
    with pytest.raises(NotFound):
        await services.upstreams.revoke("kannel-1")


async def test_a_remembered_secret_revoked_elsewhere_is_refused_once_the_memory_lapses(
    services: Services,
) -> None:
    """Two processes' views of the same store: one remembers a recognised token, the other
    revokes it; the first refuses it once `remember_s` has passed since its look-up."""
    clock = [100.0]
    serving = Credentials(services.store, "upstream", remember_s=2.0, monotonic=lambda: clock[0])
    elsewhere = Credentials(services.store, "upstream")
    credential, secret = await elsewhere.create("kannel-1")
    assert await serving.recognise(secret) == credential
    await elsewhere.revoke("kannel-1")
    clock[0] += 1.9
    assert await serving.recognise(secret) == credential
    clock[0] += 0.2
    assert await serving.recognise(secret) is None
