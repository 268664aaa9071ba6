"""Every route of every dialect, called with a second account's credentials and the first
account's ids: nothing of the first is read, changed or deleted.

The test walks the application's own route table, so a route added later without a place in
this matrix fails it.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from starlette.routing import Route

from smsinbox.app import create_app
from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.dialects.mysms import RESOURCES
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.mysms_client import Mysms
from tests.web_client import WebClient, csrf_of

ALICE, BOB = "447700900001", "447700900002"
FRIEND = "4915112345"
ADMIN_TOKEN = "admin-matrix-token"
# The web inbox's routes: a signed-in browser of bob's, with alice's ids in every path.
WEB_PATHS = ("/signin", "/signout", "/inbox", "/compose", "/messages/", "/search", "/events",
             "/contacts")  # fmt: skip
# Text that only alice's data holds: no answer to bob may contain any of it.
ALICE_DATA = ("xyzzy", "Plughfriend", "alice-phone", "receiver.example")


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        admin_token=ADMIN_TOKEN,
        push_allow_private=True,
        # Bob's refused attempts are the point here; the lockout has tests of its own.
        login_failures_per_account=100_000,
        login_failures_per_address=100_000,
        login_failure_delay=0.0,
    )


class Matrix:
    """Alice's data, Bob's credentials, and the routes exercised so far."""

    def __init__(self, services: Services, http: httpx.AsyncClient) -> None:
        self.services = services
        self.http = http
        self.exercised: set[tuple[str, str]] = set()

    async def setup(self) -> None:
        services = self.services
        await services.accounts.add("alice", "alice-pw", msisdns=(ALICE,))
        await services.accounts.add("bob", "bob-pw", msisdns=(BOB,))
        _, self.api_key = await services.api_keys.create("app")
        _, self.upstream_token = await services.upstreams.create("kannel")
        self.alice, self.bob = Mysms(self.http, self.api_key), Mysms(self.http, self.api_key)
        await self.alice.login(int(ALICE), "alice-pw")
        await self.bob.login(int(BOB), "bob-pw")
        self.messages = [
            (
                await services.ingestor.accept(
                    RawInbound(FRIEND, ALICE, text=f"xyzzy {i}".encode()), upstream_id=None
                )
            ).id
            for i in range(3)
        ]
        self.locked = self.messages[0]
        await self.alice.call("/user/message/lock/list", messageIds=[self.locked])
        await self.alice.call("/user/message/send", recipient=int(FRIEND), message="xyzzy out")
        created = await self.alice.call(
            "/user/contact/create", name="Plughfriend", msisdns=[FRIEND]
        )
        self.contact = created["contact"]["contactId"]
        self.alice_device = (await self.alice.call("/user/device/register", name="alice-phone"))[
            "deviceId"
        ]
        self.bob_device = (await self.bob.call("/user/device/register", name="b"))["deviceId"]
        endpoint = await services.push.add("alice", "http://receiver.example/hook")
        self.endpoint = endpoint.id
        self.batch = await services.send_api.send_batch(
            "alice", "alice-pw", recipients=[FRIEND], text="xyzzy batch"
        )

    async def alice_state(self) -> object:
        """Everything of alice's a user or the operator could notice."""
        store = self.services.store
        account = await store.get_account("alice")
        assert account is not None
        messages = await store.list_recent_messages("alice", 1000)
        return (
            [a for a in await store.list_accounts() if a.username == "alice"],
            account.password_hash,
            [(m.id, m.text, m.read, m.locked, m.status, m.modseq, m.deleted) for m in messages],
            await store.list_conversations(account.id),
            await store.list_contacts(account.id),
            await store.list_devices(account.id),
            [(e.id, e.url, e.enabled) for e in await self.services.push.endpoints_of("alice")],
        )

    def assert_nothing_of_alice(
        self, route: str, answer: httpx.Response, *, name_too: bool = True
    ) -> None:
        body = answer.text
        leaked = [text for text in (*ALICE_DATA, *(["alice"] if name_too else [])) if text in body]
        assert not leaked, f"{route} told bob {leaked}: {body[:300]}"
        assert answer.status_code < 500, f"{route} failed: {answer.status_code} {body[:300]}"

    def hostile_fields(self, schema_fields: dict[str, Any], *, own_device: bool) -> dict[str, Any]:
        """Every field of the request filled with alice's ids (or bob's own device)."""
        message = self.messages[1] if not own_device else self.locked
        values: dict[str, Any] = {
            "messageId": message,
            "messageIds": self.messages,
            "address": FRIEND,
            "addresses": [FRIEND, ALICE],
            "contactId": self.contact,
            "deviceId": self.bob_device if own_device else self.alice_device,
            "query": "xyzzy",
            "recipient": int(FRIEND),
            "message": "from bob",
            "name": "Mallory",
            "msisdns": [FRIEND],
            "read": True,
            "locked": False,
            "incoming": True,
            "offset": 0,
            "limit": 100,
            "syncInitial": not own_device,
            "syncLimit": 100,
            "syncs": [
                {
                    "operation": 0,
                    "messageId": message,
                    "read": True,
                    "locked": False,
                    "deviceMessageId": "bob-1",
                },
                {"operation": 2, "messageId": self.messages[2], "deviceMessageId": "bob-2"},
            ],
        }
        return {name: values[name] for name in schema_fields if name in values}

    async def mysms_route(self, path: str, rest: bool) -> None:
        """Bob calls one mysms resource with alice's ids, twice (alice's device, his own)."""
        resource = next(r for r in RESOURCES if r.path == path)
        base = "/rest" if rest else "/json"
        for own_device in (False, True):
            body = {
                "apiKey": self.api_key,
                "authToken": self.bob.token,
                **self.hostile_fields(resource.request.fields, own_device=own_device),
            }
            answer = await self.http.post(base + path, content=json.dumps(body),
                                          headers={"content-type": "application/json"})  # fmt: skip
            self.assert_nothing_of_alice(base + path, answer)
            assert answer.json()["errorCode"] in (0, 2, 105), (path, answer.json())
        self.exercised.add(("POST", base + path))

    async def login_and_logout(self, rest: bool) -> None:
        base = "/rest" if rest else "/json"
        for msisdn, password in ((ALICE, "bob-pw"), (BOB, "alice-pw"), (ALICE, "")):
            answer = await self.http.post(
                base + "/user/login",
                json={"apiKey": self.api_key, "msisdn": int(msisdn), "password": password},
            )
            self.assert_nothing_of_alice("login", answer)
            assert "authToken" not in answer.json()
        # Bob logging out ends his session only.
        bob = Mysms(self.http, self.api_key)
        await bob.login(int(BOB), "bob-pw")
        answer = await self.http.post(
            base + "/user/logout", json={"apiKey": self.api_key, "authToken": bob.token}
        )
        assert answer.json() == {"errorCode": 0}
        assert (await self.alice.call("/user/device/devices/get"))["errorCode"] == 0
        assert (await bob.call("/user/device/devices/get"))["errorCode"] == 100
        self.exercised |= {("POST", base + "/user/login"), ("POST", base + "/user/logout")}

    async def polling_route(self, path: str) -> None:
        """MC5 and EAPI: bob's own credentials with guessed cursors, and alice's username."""
        cursors = {"since": ["0", "1", str(2**40)], "last_retrieved_id": ["0", "1", "2"]}
        cursor = "since" if path.startswith("/services") else "last_retrieved_id"
        for value in cursors[cursor]:
            for method in ("GET", "POST"):
                params = {"username": "bob", "password": "bob-pw", cursor: value}
                answer = await self.http.request(
                    method, path, **({"params": params} if method == "GET" else {"data": params})
                )
                self.assert_nothing_of_alice(path, answer)
                assert answer.status_code == 200
        for username, password in (("alice", "bob-pw"), ("alice", ""), ("ALICE", "alice-pw")):
            answer = await self.http.get(
                path, params={"username": username, "password": password, cursor: "0"}
            )
            self.assert_nothing_of_alice(path, answer)
        self.exercised |= {("GET", path), ("POST", path)}

    async def sending_route(self, path: str) -> None:
        """The send APIs: bob cannot send as alice's number, answer her messages, or read her
        batches; alice's username with a wrong password sends nothing."""
        own = {"username": "bob", "password": "bob-pw"}
        if path.endswith("sendSingle2"):
            tries = [
                ({**own, "text": "hi", "recipient": FRIEND, "sender": ALICE}, 2),
                ({**own, "text": "hi", "replyTo": str(self.messages[1])}, 2),
                ({"username": "alice", "password": "bob-pw", "text": "hi", "recipient": FRIEND}, 3),
            ]
            read = lambda answer: answer.json()["status"]  # noqa: E731
        elif "send_sms" in path:
            tries = [
                ({**own, "message": "hi", "msisdn": FRIEND, "sender": ALICE}, 24),
                (
                    {"username": "alice", "password": "bob-pw", "message": "hi", "msisdn": FRIEND},
                    23,
                ),
            ]
            read = lambda answer: int(answer.text.split("|")[0])  # noqa: E731
        else:
            report = {**own, "batch_id": str(self.batch), "optional_fields": "body,origin_address"}
            tries = [(report, 0), ({**report, "username": "alice"}, 23)]
            read = lambda answer: int(answer.text.split("|")[0])  # noqa: E731
        for method in ("GET", "POST"):
            for params, expected in tries:
                answer = await self.http.request(
                    method, path, **({"params": params} if method == "GET" else {"data": params})
                )
                self.assert_nothing_of_alice(path, answer)
                assert read(answer) == expected, (method, path, params, answer.text)
                if "get_report" in path and expected == 0:
                    assert answer.text == "0|Results to follow\n\n"  # no row of alice's batch
            self.exercised.add((method, path))

    def bob_secrets(self) -> list[str]:
        """Every credential bob (or anyone not the operator) could present as a bearer."""
        return [self.bob.token or "", self.api_key, self.upstream_token, "bob-pw"]

    async def admin_route(self, method: str, template: str) -> None:
        path = template.format(username="alice", endpoint_id=self.endpoint)
        for secret in self.bob_secrets():
            for header in ({"authorization": f"Bearer {secret}"}, {"authorization": secret}, {}):
                # (no header at all is among the variants; an empty bearer is not valid HTTP)
                answer = await self.http.request(
                    method, path, headers=header, json={"url": "http://127.0.0.1:9/x"}
                )
                self.assert_nothing_of_alice(path, answer)
                assert answer.status_code == 401, (method, path, answer.status_code)
        self.exercised.add((method, template))

    async def inbound_route(self, method: str) -> None:
        """An upstream token is the only key to /inbound/sms: nobody else's secret opens it."""
        for secret in [self.bob.token or "", self.api_key, ADMIN_TOKEN, "alice-pw"]:
            params = {"token": secret, "from": FRIEND, "to": ALICE, "text": "forged"}
            answer = await self.http.request(
                method,
                "/inbound/sms",
                **({"params": params} if method == "GET" else {"data": params}),
            )
            assert answer.status_code == 401, (method, answer.status_code, answer.text)
        self.exercised.add((method, "/inbound/sms"))

    async def web_route(self, method: str, template: str) -> None:
        """Bob's browser, signed in to his own inbox, with alice's conversation, message and
        contact ids: it reads and changes nothing of hers."""
        async with WebClient(str(self.http.base_url)) as bob:
            for login, password in (("alice", "bob-pw"), (ALICE, "bob-pw"), ("alice", "")):
                answer = await bob.sign_in(login, password)
                assert answer.status_code in (400, 401), (login, answer.status_code)
            assert (await bob.sign_in("bob", "bob-pw")).status_code == 303
            paths = {
                template.format(counterpart=counterpart, message_id=message_id,
                                contact_id=self.contact)
                # A message bob sends to alice's own number would reach her, as it should.
                for counterpart in ((FRIEND, ALICE) if method == "GET" else (FRIEND,))
                for message_id in (self.locked, self.messages[1])
            }  # fmt: skip
            for path in sorted(paths):
                if method == "GET" and path == "/events":
                    async with bob.http.stream("GET", path) as stream:
                        assert stream.status_code == 200  # bob's own mailbox's versions
                    continue
                if method == "GET":
                    # A part of alice's texts: what she finds, bob must not.
                    answer = await bob.get(path, q="yzz")
                elif path == "/signout":
                    answer = await bob.post(path)
                    assert (await bob.sign_in("bob", "bob-pw")).status_code == 303
                else:
                    fields = {"text": "from bob", "to": FRIEND, "locked": "0", "name": "Mallory",
                              "numbers": FRIEND, "back": "/inbox"}  # fmt: skip
                    answer = await bob.post(path, **fields)
                self.assert_nothing_of_alice(f"{method} {path}", answer)
                if path.startswith(("/messages/", "/contacts/")):
                    assert answer.status_code == 404, (method, path, answer.status_code)
        self.exercised.add((method, template))

    async def console_route(self, method: str, template: str) -> None:
        """The operator's console: bob's browser session (or no session) is not the operator,
        and none of bob's secrets signs in as one."""
        path = template.format(username="alice")
        async with WebClient(str(self.http.base_url)) as bob:
            for secret in self.bob_secrets():
                form = await bob.http.get("/operator/signin")
                answer = await bob.http.post("/operator/signin", data={
                    "csrf": csrf_of(form.text), "token": secret})  # fmt: skip
                assert answer.status_code == 401, (secret, answer.status_code)
            for signed_in in (False, True):
                if signed_in:
                    assert (await bob.sign_in("bob", "bob-pw")).status_code == 303
                if template in ("/operator/signin",):
                    continue  # the sign-in form itself, tried above
                fields = {"action": "block", "username": "alice", "number": ALICE,
                          "password": "mallory", "name": "x", "since": "0"}  # fmt: skip
                answer = await (bob.get(path) if method == "GET" else bob.post(path, **fields))
                self.assert_nothing_of_alice(f"{method} {path}", answer)
                assert answer.status_code == 303, (method, path, answer.status_code)
                assert answer.headers["location"] == "/operator/signin"
        self.exercised.add((method, template))

    async def public_route(self, path: str) -> None:
        answer = await self.http.get(path)
        # Public documents may name example users; alice's data must not be there.
        self.assert_nothing_of_alice(path, answer, name_too=False)
        self.exercised.add(("GET", path))


def application_routes(settings: Settings) -> set[tuple[str, str]]:
    app = create_app(settings)
    return {
        (method, route.path)
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }


async def test_a_second_account_reaches_nothing_of_the_first_on_any_route(
    settings: Settings, services: Services, live_server: LiveServer
) -> None:
    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        matrix = Matrix(services, http)
        await matrix.setup()
        before = await matrix.alice_state()
        routes = application_routes(settings)
        for method, path in sorted(routes):
            if path in ("/json/user/login", "/rest/user/login"):
                await matrix.login_and_logout(rest=path.startswith("/rest"))
            elif path.endswith("/user/logout"):
                continue  # with login, above
            elif path.startswith(("/json/", "/rest/")):
                await matrix.mysms_route("/" + path.split("/", 2)[2], rest=path.startswith("/rest"))
            elif path.endswith(("/sendSingle2", "/send_sms/2/2.0", "/get_report/2/2.0")):
                await matrix.sending_route(path)
            elif path.startswith(("/services/", "/eapi/", "/reception/")):
                await matrix.polling_route(path)
            elif path.startswith("/admin/"):
                await matrix.admin_route(method, path)
            elif path == "/inbound/sms":
                await matrix.inbound_route(method)
            elif path.startswith("/operator"):
                await matrix.console_route(method, path)
            elif path == "/" or path.startswith(WEB_PATHS):
                await matrix.web_route(method, path)
            else:
                await matrix.public_route(path)
        assert await matrix.alice_state() == before
        assert routes - matrix.exercised == set(), "routes without a place in the matrix"
        # And alice still reaches all of it.
        found = await matrix.alice.call("/user/message/search", query="xyzzy")
        assert len(found["messages"]) == 5
