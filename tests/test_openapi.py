"""The OpenAPI document: it covers every route, follows the codec, and is valid OpenAPI 3.1."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import jsonschema_rs
import pytest
from starlette.routing import Route

from smsinbox.app import create_app
from smsinbox.config import Settings
from smsinbox.dialects import mysms
from smsinbox.dialects.openapi import MYSMS_ANSWERS, document
from tests.conftest import LiveServer

HTTP_METHODS = {"get", "post", "put", "patch", "delete"}


def _app_operations(tmp_path: Path) -> set[tuple[str, str]]:
    app = create_app(Settings(database_url=f"sqlite:///{tmp_path / 'routes.db'}"))
    # The web inbox's pages are for browsers, not API clients: docs/web.md describes them.
    pages = {id(route) for route in app.routes if route.name == "static"} | {
        id(route) for route in app.routes
        if isinstance(route, Route) and route.endpoint.__module__.startswith("smsinbox.webui")
    }  # fmt: skip
    operations = set()
    for route in app.routes:
        if id(route) in pages:
            continue
        assert isinstance(route, Route), route
        # Starlette writes a typed parameter as {name:convertor}; OpenAPI has no convertors.
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in route.methods or ():
            if method != "HEAD":  # Starlette adds HEAD to every GET by itself
                operations.add((path, method.lower()))
    return operations


def _documented_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_every_route_of_the_app_is_documented(tmp_path: Path) -> None:
    missing = _app_operations(tmp_path) - _documented_operations()
    assert not missing, f"routes missing from /openapi.json: {sorted(missing)}"


def test_every_documented_operation_is_a_route(tmp_path: Path) -> None:
    extra = _documented_operations() - _app_operations(tmp_path)
    assert not extra, f"/openapi.json documents routes the app lacks: {sorted(extra)}"


def test_the_document_is_valid_openapi_3_1() -> None:
    definitions = pytest.importorskip("schemathesis.specs.openapi.definitions")
    validator = jsonschema_rs.validator_for(definitions.OPENAPI_31)
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(document())]
    assert errors == []


def test_operation_ids_are_unique() -> None:
    ids = [
        operation["operationId"]
        for item in document()["paths"].values()
        for method, operation in item.items()
        if method in HTTP_METHODS
    ]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize("resource", mysms.RESOURCES, ids=lambda r: r.path)
def test_mysms_requests_are_the_codec_schemas(resource: mysms.Resource) -> None:
    schemas = document()["components"]["schemas"]
    request = schemas[resource.request.name]
    assert set(request["properties"]) == set(resource.request.fields)
    assert request["xml"] == {"name": resource.request.name}
    assert "apiKey" in request["required"]
    assert ("authToken" in request["required"]) == resource.needs_session
    answer = schemas[resource.response]
    assert set(answer["properties"]) == {"errorCode"} | set(MYSMS_ANSWERS[resource.response])
    for base, media in (
        ("json", {"application/json"}),
        ("rest", {"application/json", "application/xml"}),
    ):
        operation = document()["paths"][f"/{base}{resource.path}"]["post"]
        assert set(operation["requestBody"]["content"]) == media


def test_every_mysms_error_code_is_listed() -> None:
    codes = document()["components"]["schemas"]["userLoginResponse"]["properties"]["errorCode"]
    assert set(codes["enum"]) >= {0, 2, 97, 98, 99, 100, 105, 113, 600}


def test_sync_entries_are_nested_objects_without_credentials() -> None:
    sync = document()["components"]["schemas"]["userMessageSyncRequest"]["properties"]["syncs"]
    entry = sync["items"]
    assert entry["type"] == "object"
    assert {"operation", "messageId", "deviceMessageId"} <= set(entry["properties"])
    assert not {"apiKey", "authToken"} & set(entry["properties"])


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_server_serves_the_document(live_server: LiveServer) -> None:
    response = httpx.get(f"{live_server.url}/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json() == document()
