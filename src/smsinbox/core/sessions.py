"""mysms sessions: login with an API key, a number and a password; auth tokens after that."""

from __future__ import annotations

import dataclasses

from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.caller import INTERNAL, Caller
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.credentials import Credentials
from smsinbox.core.numbers import normalize_msisdn
from smsinbox.core.ratelimit import RateLimits
from smsinbox.core.tokens import digest, new_secret
from smsinbox.errors import (
    AccessDenied,
    InvalidApiKey,
    InvalidAuthToken,
    MissingParameter,
)
from smsinbox.models import AccountStatus, Credential
from smsinbox.store import Store


@dataclasses.dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: every mysms operation (and every page of the web inbox) is scoped to
    `account_id`."""

    account_id: int
    username: str
    numbers: tuple[str, ...]
    api_key_id: int | None  # None: a browser session of the web inbox
    # Where the numbers its user writes are read: the account's region, else the default.
    region: str = ""


class Sessions:
    def __init__(
        self,
        store: Store,
        api_keys: Credentials,
        authenticator: PasswordAuthenticator,
        rate_limits: RateLimits,
        guard: LoginGuard,
        *,
        token_ttl_s: int,
        default_region: str = "",
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.api_keys = api_keys
        self.authenticator = authenticator
        self.rate_limits = rate_limits
        self.guard = guard
        self.token_ttl_ms = token_ttl_s * 1000
        # A login's number is read here: whose account it is, and so its region, is what
        # the number is looked up to learn.
        self.default_region = default_region
        self.clock = clock

    async def _api_key(self, api_key: str | None) -> Credential:
        key = await self.api_keys.recognise(api_key)
        if key is None:
            raise InvalidApiKey("the api key is invalid")
        return key

    async def login(
        self,
        api_key: str | None,
        msisdn: str | None,
        password: str | None,
        caller: Caller = INTERNAL,
    ) -> str:
        """A new auth token for the account that owns `msisdn`.

        A wrong API key counts as a failed login of the caller's address (it is a secret
        too); a wrong password counts against the account as well.
        """
        key = await self.api_keys.recognise(api_key)
        if key is None:
            await self.guard.failed(await self.guard.admit(caller, None))
            raise InvalidApiKey("the api key is invalid")
        await self.rate_limits.hit(account_id=None, api_key_id=key.id)
        if msisdn is None or msisdn == "":
            raise MissingParameter("msisdn")
        if not password:
            raise MissingParameter("password")
        number = normalize_msisdn(msisdn, "msisdn", region=self.default_region)
        account_id = await self.store.find_account_by_number(number)
        found = None if account_id is None else await self.store.get_account_by_id(account_id)
        attempt = await self.guard.admit(caller, None if found is None else found[0].id)
        # Unknown number and wrong password get the same answer.
        if found is None or not await self.authenticator.password_matches(found[0], password):
            await self.guard.failed(attempt)
            raise AccessDenied("wrong msisdn or password")
        await self.guard.succeeded(attempt)
        if found[0].status is not AccountStatus.ACTIVE:
            raise AccessDenied(f"account is {found[0].status.value}")
        token = new_secret("at_")
        now = self.clock()
        await self.store.create_auth_token(
            found[0].id, key.id, digest(token), now=now, expires_at=now + self.token_ttl_ms
        )
        return token

    async def logout(self, api_key: str | None, auth_token: str | None) -> None:
        await self.authenticate(api_key, auth_token)
        await self.store.revoke_auth_token(digest(auth_token or ""), now=self.clock())

    async def authenticate(self, api_key: str | None, auth_token: str | None) -> Principal:
        """The caller of a mysms request, after the key, token, status and rate checks."""
        key = await self._api_key(api_key)
        if not auth_token or len(auth_token) > 256:
            raise InvalidAuthToken("the auth token is invalid")
        # A token works only with the API key it was issued to.
        session = await self.store.find_session(
            digest(auth_token), api_key_id=key.id, now=self.clock()
        )
        if session is None:
            raise InvalidAuthToken("the auth token is invalid")
        account, numbers = session.account, session.numbers
        if account.status is not AccountStatus.ACTIVE:
            raise AccessDenied(f"account is {account.status.value}")
        await self.rate_limits.hit(account_id=account.id, api_key_id=key.id)
        return Principal(
            account.id, account.username, numbers, key.id, account.region or self.default_region
        )
