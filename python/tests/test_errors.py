"""The SDK's error table agrees with the server's API description (``docs/openapi.json``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Set, Tuple

from hutch import ERROR_CODES, SandboxAPIError, SessionNotFoundError
from hutch.errors import error_from_response, status_of

OPENAPI = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def _document() -> Dict[str, Any]:
    return json.loads(OPENAPI.read_text())  # type: ignore[no-any-return]


def _documented_statuses(doc: Dict[str, Any]) -> Set[Tuple[str, int]]:
    """``(code, status)`` of every error answer a route documents."""
    responses = doc["components"]["responses"]
    pairs = set()
    for item in doc["paths"].values():
        for operation in item.values():
            if not isinstance(operation, dict):
                continue
            for status, answer in operation.get("responses", {}).items():
                ref = answer.get("$ref", "")
                if not ref.startswith("#/components/responses/") or not status.isdigit():
                    continue
                body = responses[ref.rsplit("/", 1)[1]].get("content", {}).get("application/json", {})
                code = body.get("example", {}).get("error", {}).get("code")
                if code:
                    pairs.add((code, int(status)))
    return pairs


def test_every_error_code_of_the_api_has_a_class_and_nothing_else_does() -> None:
    codes = set(_document()["components"]["schemas"]["ErrorCode"]["enum"])
    assert set(ERROR_CODES) == codes


def test_each_code_has_the_status_the_routes_document() -> None:
    pairs = _documented_statuses(_document())
    assert pairs, "the API description documents no error answer"
    for code, status in sorted(pairs):
        assert status_of(code) == status, code


def test_an_answer_becomes_the_class_of_its_code() -> None:
    for code, (status, cls) in ERROR_CODES.items():
        body = json.dumps({"error": {"code": code, "message": "m"}})
        error = error_from_response(status, {}, body)
        assert type(error) is cls, code
        assert isinstance(error, SandboxAPIError)
        assert (error.status_code, error.code, error.message) == (status, code, "m")
    missing = error_from_response(404, {}, json.dumps({"error": {"code": "session_not_found"}}))
    assert isinstance(missing, SessionNotFoundError)
