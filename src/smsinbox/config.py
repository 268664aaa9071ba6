"""Settings: every one has a default, a type and help text.

Sources, later ones winning: the defaults below, an optional TOML file (its path in
``SMSINBOX_CONFIG`` or given to the CLI with ``--config``), then ``SMSINBOX_<NAME>``
environment variables, then explicit overrides such as CLI flags.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import limits

ENV_PREFIX = "SMSINBOX_"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")


def valid_region(code: str) -> bool:
    """Whether `code` is a region phone numbers are known for (GB, DE, US, ...)."""
    import phonenumbers

    return code in phonenumbers.SUPPORTED_REGIONS


class ConfigError(ValueError):
    """A setting has a value of the wrong type or an unknown name."""


def setting(default: Any, help: str, *, secret: bool = False) -> Any:
    """Declare a setting; the help text is what docs/configuration.md must explain.

    A secret setting (a token, or a URL that may carry a password) is left out of the
    settings' repr, so printing or logging them never shows it.
    """
    return dataclasses.field(default=default, repr=not secret, metadata={"help": help})


@dataclasses.dataclass(frozen=True)
class Settings:
    """The server's configuration. Build it with :func:`load_settings`."""

    database_url: str = setting(
        "sqlite:///var/smsinbox.db",
        "Where messages are stored: sqlite:///relative/path.db, sqlite:////absolute/path.db "
        "or postgresql://user:password@host:port/database. SQLite is the embedded default; "
        "PostgreSQL is the production store.",
        secret=True,
    )
    host: str = setting("127.0.0.1", "Address the HTTP server listens on.")
    port: int = setting(8080, "TCP port the HTTP server listens on.")
    log_level: str = setting("info", "Logging level: debug, info, warning or error.")
    log_format: str = setting(
        "text",
        "How `serve` and `worker` write their log lines (the request log and uvicorn's own "
        "lines included): text, or json for one JSON object a line.",
    )
    default_region: str = setting(
        "",
        "The country (ISO 3166 code such as GB or DE) whose national forms of phone numbers "
        "(07700 900123) are read as its numbers, at ingest, in `number add`, in lookups and "
        "in the send APIs; an account's own region overrides it. Empty: only international "
        "forms (+44..., 0044..., 44...) are understood.",
    )
    migrate_on_start: bool = setting(
        True,
        "Bring the database schema up to date when the server or a CLI command starts. "
        "Turn it off to run `smsinbox db upgrade` yourself during deploys.",
    )
    db_pool_size: int = setting(
        10, "Connections kept open to PostgreSQL per process (SQLite reads share a pool too)."
    )
    db_timeout: float = setting(
        5.0,
        "Seconds to wait for the database (connect, lock or statement) before answering "
        "'temporarily unavailable' instead of hanging.",
    )
    bulk_read_concurrency: int = setting(
        4,
        "Polls, syncs, searches and listings worked on at once per process, half as many "
        "(at least one) while incoming messages wait to be stored; the rest wait their "
        "turn, so a crowd of pollers never holds up ingest (each turn is given back on the "
        "event loop's next round).",
    )
    reply_window: int = setting(
        7 * 24 * 3600,
        "Seconds during which an incoming message without an explicit reference is taken "
        "as the reply to the latest outgoing message from the same number to its sender.",
    )
    max_message_chars: int = setting(
        40_000,
        "Longest message text accepted from an upstream, in characters (255 concatenated "
        "parts of 153 GSM characters fit).",
    )
    access_log: bool = setting(
        True,
        "Log one line per HTTP request (client, method, path without the query string, "
        "status, latency). Turn it off behind a proxy that logs requests itself.",
    )
    max_body_bytes: int = setting(
        256 * 1024, "Request bodies larger than this are refused with HTTP 413 before parsing."
    )
    default_time_zone: str = setting(
        "UTC", "IANA time zone given to new accounts when none is specified."
    )
    auth_cache_ttl: int = setting(
        60,
        "Seconds a verified username/password pair is remembered after its last use (as a "
        "keyed hash, in memory) so clients that poll with their password do not pay for "
        "argon2 on every request. 0 verifies every time. A password change takes effect at "
        "once either way.",
    )
    credential_cache_ttl: float = setting(
        2.0,
        "Seconds a recognised upstream token or API key is remembered by each server process "
        "(by its digest, in memory), so ingest and mysms requests do not each look it up. A "
        "revoke takes effect at once in the process that made it and within this time in the "
        "others (the CLI is another process). 0 looks up every time.",
    )
    eapi_page_size: int = setting(
        1000, "Most records one EAPI get_inbox call returns (the platform's limit is 1000)."
    )
    retention_max_messages: int = setting(
        100_000,
        "Messages kept per account (the 'capped collection'); older unlocked ones are "
        "pruned. 0 keeps any number.",
    )
    retention_max_age_days: int = setting(
        365, "Days a message is kept; older unlocked ones are pruned. 0 keeps them forever."
    )
    auth_token_ttl: int = setting(
        30 * 24 * 3600,
        "Seconds a mysms auth token from /user/login stays valid. Logout and a password "
        "change end it sooner.",
    )
    web_session_ttl: int = setting(
        7 * 24 * 3600,
        "Seconds a browser session of the web inbox or the operator console stays valid, "
        "counted from sign-in. Signing out and a password change end it sooner.",
    )
    rate_limit_per_account: str = setting(
        "600/minute",
        "Most mysms API requests one account may make, as a `limits` rate string "
        "('600/minute', '20/second'). Above it the answer is error 98.",
    )
    rate_limit_per_api_key: str = setting(
        "6000/minute", "Most mysms API requests made with one API key, as a rate string."
    )
    rate_limit_storage: str = setting(
        "memory://",
        "Where rate-limit counters live: memory:// (one process) or redis://host:port/db "
        "(shared by every process).",
        secret=True,
    )
    login_failure_window: int = setting(
        300,
        "Seconds over which failed logins are counted for brute-force protection (every "
        "password or token check: MC5, EAPI, mysms login, inbound tokens, the admin token). "
        "Counters live in rate_limit_storage, so with Redis every process counts together.",
    )
    login_failures_per_account: int = setting(
        10,
        "Failed logins to one account within login_failure_window after which every login "
        "to it is refused, a right password included, until the oldest failure leaves the "
        "window. A successful login clears the account's count.",
    )
    login_failures_per_address: int = setting(
        50,
        "Failed logins from one client address within login_failure_window after which "
        "every login from it is refused. Higher than the per-account limit so that many "
        "users behind one NAT do not lock each other out by mistyping.",
    )
    login_failure_delay: float = setting(
        0.25,
        "Seconds a login waits when its account has one recent failure, doubled for each "
        "further failure; an address's failures weigh in proportion to the two limits. It "
        "waits before the password is checked, right or wrong. 0 turns the slowing off "
        "(the lockout stays).",
    )
    login_failure_max_delay: float = setting(
        4.0, "Longest wait of a login with recent failures, in seconds."
    )
    sync_tombstone_days: int = setting(
        30,
        "Days a deleted message is kept as a tombstone so devices can sync the delete; a "
        "device that has not synced for longer must resync from scratch.",
    )
    push_worker: bool = setting(
        True,
        "Run the push worker inside `smsinbox serve`. Turn it off when it runs on its own "
        "(`smsinbox worker`).",
    )
    push_retry_schedule: str = setting(
        "0,5,300,1800,7200,18000,36000,36000",
        "Seconds before each push attempt after a delivery is queued: the first is the "
        "first attempt, each later one a retry. After the last the delivery is dead-lettered.",
    )
    push_retry_jitter: float = setting(
        0.1, "Random spread of each retry delay, as a fraction (0.1 = plus or minus 10%)."
    )
    push_timeout: float = setting(10.0, "Seconds a push receiver has to answer one attempt.")
    push_concurrency: int = setting(64, "Push attempts in flight at once per worker process.")
    push_endpoint_concurrency: int = setting(
        16,
        "Push attempts in flight at once to one endpoint, per worker process (at most a "
        "quarter of push_concurrency). A slow or hanging receiver holds up only its own.",
    )
    push_disable_after_days: float = setting(
        3.0,
        "An endpoint whose deliveries have failed without a success for this many days is "
        "disabled; its pending deliveries are dead-lettered (replayable).",
    )
    push_allow_private: bool = setting(
        False,
        "Allow push URLs that resolve to private, loopback or link-local addresses. Off, so "
        "customers cannot make the server call into the operator's own network.",
    )
    worker_metrics_port: int = setting(
        0,
        "TCP port on which `smsinbox worker` serves its Prometheus /metrics (on the host "
        "setting's address); 0: none.",
    )
    admin_token: str = setting(
        "",
        "Bearer token for the operator's HTTP API under /admin (push endpoints, deliveries, "
        "replay). Empty disables that API.",
        secret=True,
    )
    benchmark_routes: bool = setting(
        False,
        "Serve /_bench/noop, an empty answer from the outermost layer of the app, which the "
        "benchmark measures as the machine's ceiling. Leave it off in production.",
    )
    retention_interval: int = setting(
        300, "Seconds between retention runs of the background pruner in `smsinbox serve`."
    )
    smpp_binds: bool = setting(
        True,
        "Run the SMPP binds configured with `smsinbox smpp add` inside `smsinbox serve`. "
        "Turn it off in all but one process when several serve the same store and the SMSC "
        "allows one bind per account.",
    )
    smpp_refresh: float = setting(
        5.0,
        "Seconds between reads of the SMPP bind configuration in `smsinbox serve`: how soon "
        "`smsinbox smpp add`, `enable`, `disable`, `routes` and `remove` take effect there.",
    )
    send_expiry: int = setting(
        86_400,
        "Seconds an outgoing message to a number outside this server may wait in the queue "
        "for an SMPP bind to accept it (its bind down, throttled or refusing for now); then "
        "it has failed.",
    )
    smpp_reassembly_timeout: int = setting(
        300,
        "Seconds to wait for the rest of a long message received over SMPP; then the parts "
        "that came are stored as the message. Parts of a stored message are kept as long "
        "again, so one the SMSC delivers again is recognised.",
    )

    def __post_init__(self) -> None:
        problems = []
        if self.log_level.lower() not in LOG_LEVELS:
            problems.append(f"log_level must be one of {', '.join(LOG_LEVELS)}")
        if not 0 <= self.port <= 65535 or not 0 <= self.worker_metrics_port <= 65535:
            problems.append("port and worker_metrics_port must be between 0 and 65535")
        if self.log_format not in LOG_FORMATS:
            problems.append(f"log_format must be one of {', '.join(LOG_FORMATS)}")
        if self.default_region and not valid_region(self.default_region):
            problems.append(
                f"default_region {self.default_region!r} is not a country code such as GB"
            )
        if self.db_pool_size < 1:
            problems.append("db_pool_size must be at least 1")
        if self.db_timeout <= 0:
            problems.append("db_timeout must be positive")
        if self.reply_window < 0:
            problems.append("reply_window must not be negative")
        if self.max_message_chars < 1 or self.max_body_bytes < 1:
            problems.append("max_message_chars and max_body_bytes must be positive")
        for name in ("rate_limit_per_account", "rate_limit_per_api_key"):
            try:
                limits.parse(getattr(self, name))
            except ValueError:
                problems.append(f"{name} must be a rate like '600/minute'")
        if min(self.login_failure_window, self.login_failures_per_account) < 1:
            problems.append("login_failure_window and login_failures_per_account must be positive")
        if self.login_failures_per_address < 1:
            problems.append("login_failures_per_address must be positive")
        if not 0 <= self.login_failure_delay <= self.login_failure_max_delay:
            problems.append("login_failure_delay must be between 0 and login_failure_max_delay")
        if not self.rate_limit_storage.startswith(("memory://", "redis://", "rediss://")):
            problems.append("rate_limit_storage must be memory:// or a redis:// URL")
        try:
            schedule = self.retry_schedule()
            if not schedule or min(schedule) < 0 or schedule[0] != 0:
                raise ValueError
        except ValueError:
            problems.append(
                "push_retry_schedule must be comma-separated non-negative seconds, starting "
                "with 0 (the first attempt is made at once)"
            )
        if not 0 <= self.push_retry_jitter < 1 or self.push_timeout <= 0:
            problems.append("push_retry_jitter must be in [0, 1) and push_timeout positive")
        if self.bulk_read_concurrency < 1:
            problems.append("bulk_read_concurrency must be positive")
        if min(self.push_concurrency, self.push_endpoint_concurrency) < 1:
            problems.append("push_concurrency and push_endpoint_concurrency must be positive")
        if self.push_disable_after_days <= 0:
            problems.append("push_disable_after_days must be positive")
        if self.auth_token_ttl < 1 or self.sync_tombstone_days < 1:
            problems.append("auth_token_ttl and sync_tombstone_days must be positive")
        if self.web_session_ttl < 1:
            problems.append("web_session_ttl must be positive")
        if self.eapi_page_size < 1 or self.retention_interval < 1:
            problems.append("eapi_page_size and retention_interval must be positive")
        if self.send_expiry < 1:
            problems.append("send_expiry must be positive")
        if self.smpp_refresh <= 0:
            problems.append("smpp_refresh must be positive")
        if self.smpp_reassembly_timeout < 1:
            problems.append("smpp_reassembly_timeout must be positive")
        if (
            min(self.auth_cache_ttl, self.retention_max_messages, self.retention_max_age_days) < 0
            or self.credential_cache_ttl < 0
        ):
            problems.append(
                "auth_cache_ttl, credential_cache_ttl and retention limits must not be negative"
            )
        try:
            zoneinfo.ZoneInfo(self.default_time_zone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(f"default_time_zone {self.default_time_zone!r} is not an IANA zone")
        if problems:
            raise ConfigError("; ".join(problems))

    def retry_schedule(self) -> tuple[float, ...]:
        return tuple(float(part) for part in self.push_retry_schedule.split(","))

    @classmethod
    def field_help(cls) -> dict[str, str]:
        """Each setting's name and help text, in declaration order."""
        return {f.name: f.metadata["help"] for f in dataclasses.fields(cls)}


def _coerce(name: str, kind: type, raw: Any) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"1", "true", "yes", "on"}:
            return True
        if text in {"0", "false", "no", "off"}:
            return False
        raise ConfigError(f"{name}: expected true or false, got {raw!r}")
    try:
        if kind is int and isinstance(raw, float | bool):
            raise ValueError
        return kind(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: expected {kind.__name__}, got {raw!r}") from None


def load_settings(
    config_file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build settings from defaults, the TOML file, the environment and overrides."""
    env = os.environ if environ is None else environ
    kinds = {f.name: _field_type(f) for f in dataclasses.fields(Settings)}
    # Secrets may come from a file instead (SMSINBOX_ADMIN_TOKEN_FILE=/run/secrets/...), as
    # container and service managers hand them over, so they never sit in the environment.
    secret_names = {f.name for f in dataclasses.fields(Settings) if not f.repr}
    values: dict[str, Any] = {}

    path = config_file or env.get(ENV_PREFIX + "CONFIG")
    if path:
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, raw in document.items():
            if key not in kinds:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, kinds[key], raw)

    for name, kind in kinds.items():
        variable = ENV_PREFIX + name.upper()
        raw_env = env.get(variable)
        from_file = env.get(variable + "_FILE") if name in secret_names else None
        if raw_env and from_file:
            # Which one was meant cannot be guessed; an image's default in one and the
            # operator's secret in the other would otherwise go unnoticed.
            raise ConfigError(f"set {variable} or {variable}_FILE, not both")
        if raw_env is not None and raw_env != "":
            values[name] = _coerce(variable, kind, raw_env)
        elif from_file:
            values[name] = _read_secret_file(variable + "_FILE", from_file)

    for name, raw in overrides.items():
        if name not in kinds:
            raise ConfigError(f"unknown setting {name!r}")
        if raw is not None:
            values[name] = _coerce(name, kinds[name], raw)
    return Settings(**values)


def _read_secret_file(variable: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as handle:
            value = handle.read()
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}") from None
    # A file written by `echo` or an editor ends in a newline that is not part of the secret.
    return value.rstrip("\r\n")


def _field_type(field: dataclasses.Field[Any]) -> type:
    # Annotations are strings under `from __future__ import annotations`.
    names = {"str": str, "int": int, "float": float, "bool": bool}
    return names[str(field.type)]
