"""Browser sessions: an account's user signs in to the web inbox with a username (or one of
the account's numbers) and password, the operator signs in to the console with the admin
token. Both get a session token for a cookie and a CSRF token for the session's forms.

Sign-ins pass the same brute-force guard as every API login. A session ends at sign-out,
when it expires, and for an account's user also as soon as the account is no longer active
or its password changes (checked on every request, so a blocked user is out at once).
"""

from __future__ import annotations

import dataclasses
import hmac
import secrets

from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.bruteforce import LoginGuard
from smsinbox.core.caller import Caller
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.numbers import normalize_msisdn
from smsinbox.core.sessions import Principal
from smsinbox.core.tokens import digest, new_secret
from smsinbox.errors import AuthenticationFailed, InvalidInput, MissingParameter
from smsinbox.models import AccountStatus
from smsinbox.store import Store

MAX_TOKEN = 256


@dataclasses.dataclass(frozen=True, slots=True)
class WebSession:
    """Who a browser is: an account's user (`principal`) or the operator (None)."""

    principal: Principal | None
    time_zone: str
    csrf_token: str

    @property
    def operator(self) -> bool:
        return self.principal is None


class WebSessions:
    def __init__(
        self,
        store: Store,
        authenticator: PasswordAuthenticator,
        guard: LoginGuard,
        *,
        admin_token: str,
        ttl_s: int,
        default_time_zone: str,
        default_region: str = "",
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.guard = guard
        self.admin_token = admin_token
        self.ttl_ms = ttl_s * 1000
        self.default_time_zone = default_time_zone
        # A sign-in's number is read here (whose account it is is not known yet).
        self.default_region = default_region
        self.clock = clock

    @property
    def console_enabled(self) -> bool:
        """The console exists only where the operator set an admin token."""
        return bool(self.admin_token)

    async def sign_in(self, login: str | None, password: str | None, caller: Caller) -> str:
        """A session token for the account whose username, or one of whose numbers, is
        `login`; the authenticator's errors (unknown, wrong, blocked, locked out) if not."""
        if not login or not login.strip():
            raise MissingParameter("username")
        login = login.strip()
        username = login
        try:
            number = normalize_msisdn(login, region=self.default_region)
            owner = await self.store.find_account_by_number(number)
        except InvalidInput:
            owner = None  # not a number: a username
        if owner is not None:
            found = await self.store.get_account_by_id(owner)
            if found is not None:
                username = found[0].username
        account = await self.authenticator.authenticate(username, password, caller)
        return await self._open(account.id)

    async def sign_in_operator(self, admin_token: str | None, caller: Caller) -> str:
        """A console session for whoever knows the admin token."""
        attempt = await self.guard.admit(caller, None)
        given = (admin_token or "").strip().encode()
        if not self.admin_token or not hmac.compare_digest(given, self.admin_token.encode()):
            await self.guard.failed(attempt)
            raise AuthenticationFailed("wrong admin token")
        return await self._open(None)

    async def _open(self, account_id: int | None) -> str:
        token = new_secret("ws_")
        now = self.clock()
        await self.store.create_web_session(
            account_id, digest(token), secrets.token_urlsafe(32), now=now,
            expires_at=now + self.ttl_ms,
        )  # fmt: skip
        return token

    async def session(self, token: str | None) -> WebSession | None:
        """The live session this cookie names, or None (then the browser must sign in)."""
        if not token or len(token) > MAX_TOKEN:
            return None
        found = await self.store.find_web_session(digest(token), now=self.clock())
        if found is None:
            return None
        account_id, csrf_token = found
        if account_id is None:
            if not self.console_enabled:
                return None  # the admin token was unset since: the console is gone
            return WebSession(None, self.default_time_zone, csrf_token)
        account = await self.store.get_account_by_id(account_id)
        if account is None or account[0].status is not AccountStatus.ACTIVE:
            return None
        principal = Principal(
            account_id, account[0].username, account[1], None,
            account[0].region or self.default_region,
        )  # fmt: skip
        return WebSession(principal, account[0].time_zone, csrf_token)

    async def sign_out(self, token: str | None) -> None:
        if token and len(token) <= MAX_TOKEN:
            await self.store.revoke_web_session(digest(token), now=self.clock())
