"""Credentials at rest and in transit: argon2id, digests only, nothing secret in logs or errors."""

from __future__ import annotations

import ast
import secrets
import time
from pathlib import Path

import httpx
from sqlalchemy import select

from smsinbox.config import Settings
from smsinbox.core.tokens import digest
from smsinbox.services import Services
from smsinbox.store.tables import metadata
from tests.faults import serving

ALICE = "447700900001"
SRC = Path(__file__).resolve().parent.parent / "src" / "smsinbox"


async def database_dump(services: Services) -> str:
    """Every row of every table, as text."""
    rows = []
    async with services.store.db.snapshot("test_dump") as connection:
        for table in metadata.sorted_tables:
            rows += [repr(tuple(row)) for row in (await connection.execute(select(table))).all()]
    return "\n".join(rows)


async def test_passwords_are_stored_as_argon2id(services: Services) -> None:
    await services.accounts.add("alice", "first password", msisdns=(ALICE,))
    await services.accounts.change_password("alice", "second password")
    account = await services.store.get_account("alice")
    assert account is not None
    assert account.password_hash.startswith("$argon2id$")
    dump = await database_dump(services)
    assert "first password" not in dump and "second password" not in dump


async def test_tokens_and_keys_are_random_and_stored_only_as_digests(
    services: Services,
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    _, upstream_token = await services.upstreams.create("kannel")
    _, other_upstream_token = await services.upstreams.create("smsc")
    _, api_key = await services.api_keys.create("app")
    auth_token = await services.sessions.login(api_key, ALICE, "pw")
    issued = [upstream_token, other_upstream_token, api_key, auth_token]
    assert len(set(issued)) == len(issued)
    # 32 random bytes in URL-safe base64 after the prefix: 43 characters.
    assert all(len(secret.split("_", 1)[1]) >= 43 for secret in issued)
    dump = await database_dump(services)
    for secret in issued:
        assert secret not in dump
        assert secret.split("_", 1)[1] not in dump
        assert digest(secret) in dump  # found by its digest, never compared itself


def test_secrets_are_compared_in_constant_time_or_looked_up_by_digest() -> None:
    """No `==` or `!=` between a secret-named value and anything else in the code.

    Digests (`*_hash`) are what the store looks secrets up by: an index lookup on a SHA-256
    digest tells a timing attacker nothing about the secret.
    """
    secret_names = ("password", "token", "secret", "api_key", "apikey")
    allowed = {"password_changed_at", "token_ttl_ms", "auth_token_ttl", "secret_hash"}
    offenders = []
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, ast.Eq | ast.NotEq) for op in node.ops):
                continue
            for operand in [node.left, *node.comparators]:
                name = operand.attr if isinstance(operand, ast.Attribute) else None
                name = operand.id if isinstance(operand, ast.Name) else name
                if not name or name in allowed or name.endswith("_hash"):
                    continue
                if any(part in name.lower() for part in secret_names):
                    offenders.append(f"{path.relative_to(SRC)}:{node.lineno} {name}")
    assert not offenders, "compare secrets with hmac.compare_digest or by digest: " + str(offenders)


def test_settings_never_show_their_secrets() -> None:
    settings = Settings(
        database_url="postgresql://smsinbox:db-secret@db.internal/smsinbox",
        rate_limit_storage="redis://:redis-secret@cache.internal:6379/0",
        admin_token="admin-secret",
    )
    shown = repr(settings) + str(settings)
    assert "secret" not in shown
    assert "port=8080" in shown  # the rest is still there to read


# --- a real server at debug level ---------------------------------------------------------


async def test_secrets_never_reach_the_logs_or_error_answers(
    services: Services, database_url: str, tmp_path: Path
) -> None:
    password = "pw-" + secrets.token_hex(8)
    wrong_password = "wrong-" + secrets.token_hex(8)
    admin_token = "adm-" + secrets.token_hex(16)
    wrong_admin_token = "adm-" + secrets.token_hex(16)
    url_secret = "key" + secrets.token_hex(8)
    await services.accounts.add("alice", password, msisdns=(ALICE,))
    _, upstream_token = await services.upstreams.create("kannel")
    _, api_key = await services.api_keys.create("app")
    wrong_upstream = "up_" + secrets.token_urlsafe(32)
    wrong_api_key = "ak_" + secrets.token_urlsafe(32)
    never_shown = [
        password,
        wrong_password,
        admin_token,
        wrong_admin_token,
        upstream_token,
        wrong_upstream,
        api_key,
        wrong_api_key,
    ]
    # Secrets handed out by an answer may appear in that answer (and the admin API's), only.
    handed_out: list[str] = [url_secret]
    bodies: list[str] = []  # every answer that is not meant to hand a secret out
    log = tmp_path / "server.log"
    env = {
        "SMSINBOX_DATABASE_URL": database_url,
        "SMSINBOX_ADMIN_TOKEN": admin_token,
        "SMSINBOX_PUSH_ALLOW_PRIVATE": "true",
        "SMSINBOX_PUSH_RETRY_SCHEDULE": "0,1",
        "SMSINBOX_LOGIN_FAILURE_DELAY": "0",
    }
    with serving({**env, "SMSINBOX_LOG_LEVEL": "debug"}, log=log) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:

            async def call(method: str, path: str, **kwargs: object) -> httpx.Response:
                response = await http.request(method, path, **kwargs)  # type: ignore[arg-type]
                bodies.append(response.text + repr(dict(response.headers)))
                return response

            admin = {"Authorization": f"Bearer {admin_token}"}
            added = await http.post(
                "/admin/accounts/alice/push",
                headers=admin,
                json={"url": f"http://127.0.0.1:9/hook?key={url_secret}", "format": "standard"},
            )
            assert added.status_code == 201
            handed_out.append(added.json()["secret"])
            listed = await http.get("/admin/accounts/alice/push", headers=admin)
            assert listed.status_code == 200

            # Inbound: the token in the query string, in a form body, in a header; wrong too.
            for token in (upstream_token, wrong_upstream):
                message = {"from": "447700900999", "to": ALICE, "text": "hi"}
                await call("GET", "/inbound/sms", params={"token": token, **message})
                await call("POST", "/inbound/sms", data={"token": token, **message})
                await call(
                    "POST",
                    "/inbound/sms",
                    data={**message, "coding": "bogus"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            # MC5 and EAPI: the password in the query string and in the form.
            for secret in (password, wrong_password):
                for since in ("0", "not-a-number"):
                    query = {"username": "alice", "password": secret, "since": since}
                    await call("GET", "/services/rest/user/messages", params=query)
                    await call("POST", "/services/rest/user/allMessages", data=query)
                    eapi = {"username": "alice", "password": secret, "last_retrieved_id": since}
                    await call("GET", "/eapi/reception/get_inbox/1/1.1", params=eapi)
                    await call("POST", "/reception/get_inbox/1/1.0", data=eapi)
            # mysms: right and wrong passwords and keys, a broken body, a session, logout.
            for key, secret in ((api_key, wrong_password), (wrong_api_key, password)):
                await call(
                    "POST",
                    "/json/user/login",
                    json={"apiKey": key, "msisdn": int(ALICE), "password": secret},
                )
            await call(
                "POST",
                "/json/user/login",
                json={"apiKey": api_key, "msisdn": "not a number", "password": password},
            )
            await call(
                "POST",
                "/rest/user/login",
                content=f"<userLoginRequest><apiKey>{api_key}</apiKey><password>{password}"
                "</password><msisdn>x</msisdn></userLoginRequest>",
                headers={"Content-Type": "application/xml"},
            )
            login = await http.post(
                "/json/user/login",
                json={"apiKey": api_key, "msisdn": int(ALICE), "password": password},
            )
            auth_token = login.json()["authToken"]
            handed_out.append(auth_token)
            session = {"apiKey": api_key, "authToken": auth_token}
            await call("POST", "/json/user/message/conversations/get", json=session)
            await call("POST", "/json/user/message/get/by/conversation", json=session)
            await call("POST", "/json/user/message/send", json={**session, "recipient": "x"})
            await call("POST", "/json/user/logout", json=session)
            await call("POST", "/json/user/message/conversations/get", json=session)
            # Admin: wrong token, right token, bad bodies.
            await call("GET", "/admin/accounts/alice/push", headers={"Authorization": "x"})
            await call(
                "GET",
                "/admin/accounts/alice/push",
                headers={"Authorization": f"Bearer {wrong_admin_token}"},
            )
            await call(
                "POST", "/admin/accounts/alice/push/replay", headers=admin, content=b"not json"
            )
            await call(
                "POST",
                "/admin/accounts/alice/push",
                headers=admin,
                json={"url": "ftp://example.com/hook"},
            )
            # The push to port 9 fails; give the worker time to try and log it.
            deadline = time.monotonic() + 15
            while True:
                attempts = await http.get("/admin/accounts/alice/push/deliveries", headers=admin)
                if attempts.json()["attempts"] or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert attempts.json()["attempts"], "the push worker never tried"
            await call("GET", "/metrics")

    logged = log.read_text()
    assert "GET /services/rest/user/messages 200" in logged  # the access log did run
    for secret in never_shown + handed_out:
        assert secret not in logged, f"a secret reached the log: {secret[:8]}..."
    for secret in never_shown + handed_out:
        leaking = [body for body in bodies if secret in body]
        assert not leaking, f"an answer carries a secret: {leaking[0][:200]}"
