"""Every operation of /openapi.json, fuzzed by schemathesis against a real server.

Most generated requests carry valid credentials (an account with a number and password, a
mysms API key and session, an upstream token, the admin token), so the fuzzing reaches past
authentication into each dialect's parsing and the core. A request fails the run when the
server answers 5xx, when its answer does not match the document, or when a dialect answers
its "internal error" code (mysms 99, MC5 9999, EAPI 22) although the store is up: every
dialect catches unexpected exceptions, so that code is how a crash shows on its wire.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, CheckContext, GenerationMode, Response
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.dialects.openapi import document
from smsinbox.services import Services
from tests.conftest import ENGINES, PG_URL, REQUIRE_PG, LiveServer, _reset_postgres

NUMBER = "447700900001"
OTHER = "447700900002"
PASSWORD = "correct horse"
ADMIN_TOKEN = "admin-secret"
MAX_EXAMPLES = 12


@dataclass(frozen=True)
class Target:
    url: str
    api_key: str
    auth_token: str
    upstream_token: str
    device_id: int


async def _provision(settings: Settings) -> tuple[str, str]:
    """An account with a number, messages, a contact and a push endpoint; the two secrets."""
    services = Services.build(settings)
    await services.start()
    try:
        await services.accounts.add("alice", PASSWORD, msisdns=(NUMBER,))
        await services.accounts.add("bob", PASSWORD, msisdns=(OTHER,))
        _, api_key = await services.api_keys.create("fuzz")
        _, upstream_token = await services.upstreams.create("kannel")
        for text in (b"hello", b"second message", b"caf\xc3\xa9 \xe2\x98\xba"):
            raw = RawInbound("4915112345", NUMBER, text=text)
            await services.ingestor.accept(raw, upstream_id=None)
        await services.push.add("alice", "http://127.0.0.1:9/push", format="mc5")
    finally:
        await services.close()
    return api_key, upstream_token


@pytest.fixture(scope="module", params=ENGINES)
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """One provisioned server per engine for the whole module: starting one per operation
    would cost more than the fuzzing."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'smsinbox.db'}"
    else:
        if not PG_URL:
            if REQUIRE_PG:
                pytest.fail("SMSINBOX_TEST_REQUIRE_POSTGRES=1 but no SMSINBOX_TEST_DATABASE_URL")
            pytest.skip("PostgreSQL tests need SMSINBOX_TEST_DATABASE_URL (see .ci/run)")
        _reset_postgres()
        database_url = PG_URL
    settings = Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        # Nothing generated here may reach out of the machine, and no limit may hide a route.
        push_worker=False,
        push_allow_private=True,
        rate_limit_per_account="1000000/minute",
        rate_limit_per_api_key="1000000/minute",
        login_failure_delay=0.0,
        login_failures_per_account=1_000_000,
        login_failures_per_address=1_000_000,
    )
    api_key, upstream_token = asyncio.run(_provision(settings))
    with LiveServer(settings) as server:
        login = httpx.post(
            f"{server.url}/json/user/login",
            json={"apiKey": api_key, "msisdn": int(NUMBER), "password": PASSWORD},
        ).json()
        device = httpx.post(
            f"{server.url}/json/user/device/register",
            json={"apiKey": api_key, "authToken": login["authToken"], "name": "phone"},
        ).json()
        yield Target(server.url, api_key, login["authToken"], upstream_token, device["deviceId"])


# The document as the code builds it; test_openapi checks the server serves exactly this.
schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(
    modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
    max_examples=MAX_EXAMPLES,
    deterministic=True,
)


def _coin(case: Case) -> bool:
    """A deterministic three-in-four choice per case: most requests authenticate, some not."""
    seen = repr((case.path_parameters, case.query, case.body)).encode()
    return zlib.crc32(seen) % 4 != 0


def _set(values: Any, name: str, value: Any) -> None:
    if isinstance(values, dict) and name in values:
        values[name] = value


def authenticate(case: Case, target: Target) -> dict[str, str]:
    """Put valid credentials into most cases; the headers to send beside them."""
    path = case.operation.path
    if not _coin(case):
        return {}
    if path.startswith(("/json/", "/rest/")):
        _set(case.body, "apiKey", target.api_key)
        if not path.endswith("/user/logout"):  # logging out would end the shared session
            _set(case.body, "authToken", target.auth_token)
        _set(case.body, "deviceId", target.device_id)
        if path.endswith("/user/login"):
            _set(case.body, "msisdn", int(NUMBER))
            _set(case.body, "password", PASSWORD)
        return {}
    if path.startswith(("/services/", "/eapi/", "/reception/")):
        for values in (case.query, case.body):
            _set(values, "username", "alice")
            _set(values, "password", PASSWORD)
        return {}
    if path == "/inbound/sms":
        return {"Authorization": f"Bearer {target.upstream_token}"}
    if path.startswith("/admin/"):
        _set(case.path_parameters, "username", "alice")
        return {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    return {}


INTERNAL_ERRORS = {
    "/json/": b'"errorCode":99',
    "/rest/": b"<errorCode>99</errorCode>",
    "/services/": b'"status":9999',
    "/eapi/": b"22|",
    "/reception/": b"22|",
}


def no_internal_error_code(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """The dialect's "internal error" answer means an exception escaped the handler."""
    for prefix, marker in INTERNAL_ERRORS.items():
        if case.operation.path.startswith(prefix):
            body = response.content.replace(b" ", b"")
            if prefix == "/rest/" and not body.startswith(b"<"):
                marker = INTERNAL_ERRORS["/json/"]
            if prefix in ("/eapi/", "/reception/"):
                assert not body.startswith(marker), f"internal error: {body[:200]!r}"
            else:
                assert marker not in body, f"internal error: {body[:200]!r}"
    return None


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_input_makes_a_route_fail(case: Case, target: Target) -> None:
    headers = authenticate(case, target)
    case.call_and_validate(
        base_url=target.url,
        headers=headers,
        timeout=30,
        checks=[
            not_a_server_error,
            no_internal_error_code,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )
