"""The catalogue of domain errors.

The core raises these and nothing else for expected failures; each dialect maps them to its
own status codes in one table. ``code`` is stable and appears in logs and metrics.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """Base of every error the core raises on purpose."""

    code: ClassVar[str] = "internal"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or self.__class__.__doc__ or self.code)
        self.detail = str(self)


class InvalidInput(DomainError):
    """A parameter has a value the operation cannot accept."""

    code = "invalid_input"

    def __init__(self, detail: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class MissingParameter(InvalidInput):
    """A required parameter is absent or empty."""

    code = "missing_parameter"

    def __init__(self, field: str) -> None:
        super().__init__(f"missing required parameter {field!r}", field)


class InvalidRecord(InvalidInput):
    """A line of an account export is not a record that can be imported."""

    code = "invalid_record"

    def __init__(self, line: int, detail: str) -> None:
        super().__init__(f"line {line}: {detail}")
        self.line = line


class BatchTooLarge(InvalidInput):
    """More recipients in one send than a batch may hold."""

    code = "batch_too_large"


class AuthenticationFailed(DomainError):
    """The credentials do not match."""

    code = "authentication_failed"


class UnknownAccount(DomainError):
    """No account has this username."""

    code = "unknown_account"


class AccountBlocked(DomainError):
    """The account is blocked by the operator."""

    code = "account_blocked"


class AccountNeedsActivation(DomainError):
    """The account exists but has not been activated yet."""

    code = "account_needs_activation"


class NotFound(DomainError):
    """The thing asked for does not exist (or belongs to someone else)."""

    code = "not_found"


class AlreadyExists(DomainError):
    """A unique name or number is already taken."""

    code = "already_exists"


class InvalidApiKey(DomainError):
    """The API key is unknown or revoked."""

    code = "invalid_api_key"


class InvalidAuthToken(DomainError):
    """The auth token is unknown, expired or revoked."""

    code = "invalid_auth_token"


class AccessDenied(DomainError):
    """The credentials are wrong or the account may not use the API."""

    code = "access_denied"


class TooManyRequests(DomainError):
    """Too many requests in a short time."""

    code = "too_many_requests"


class LoginLockedOut(TooManyRequests):
    """Too many failed logins for this account or from this address: refused for a while."""

    code = "login_locked_out"

    def __init__(self, detail: str, retry_after_s: int) -> None:
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class UnknownDevice(DomainError):
    """The device id does not name a device of this account."""

    code = "unknown_device"


class SenderWithoutNumber(DomainError):
    """Sending needs the account to own a number."""

    code = "sender_without_number"


class SchemaBehind(DomainError):
    """The database schema is older than this version of smsinbox needs."""

    code = "schema_behind"


class StoreMissing(DomainError):
    """There is no smsinbox store where the settings point: no SQLite file, no such
    PostgreSQL database, or a database without smsinbox's schema."""

    code = "store_missing"


class InvalidState(DomainError):
    """The operation does not apply to the thing in its current state."""

    code = "invalid_state"


class StoreUnavailable(DomainError):
    """The database cannot be reached or did not answer in time."""

    code = "store_unavailable"
