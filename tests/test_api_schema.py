"""Property-based: Schemathesis generates requests for every operation of the API's own OpenAPI document, valid
and invalid, with an admin key and a police key, against the real API on a real database. No answer may be a
server error, and every answer must match what the document says (status, content type, body schema)."""

from __future__ import annotations

import time
from collections import Counter

import hypothesis
import schemathesis
from api_helpers import EAST, JPEG, raise_alert
from conftest import ApiServer
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.result import Err

from alerts.core.models import EventKind

EXAMPLES = 10  # per operation, key and mode: about 900 requests, well under a minute on 2 cores
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
NEVER_ENDS = {("GET", "/api/v1/alerts/stream")}  # a stream has no last byte to check; see test_api_hardening


def fuzz(
    api: ApiServer, operation: schemathesis.APIOperation, key: dict[str, str], mode: GenerationMode, statuses: Counter
) -> None:
    """Calls one operation with generated requests; raises at the first answer that fails a check."""

    @hypothesis.settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=operation.as_strategy(generation_mode=mode, headers=key))
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=api.url, timeout=10)
        statuses[response.status_code] += 1
        case.validate_response(response, checks=CHECKS)

    try:
        run()
    except hypothesis.errors.Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, "only an operation without parameters has no invalid request"


def test_generated_requests_get_no_server_error_and_documented_answers(api: ApiServer) -> None:
    raise_alert(api.database_url, snapshot=JPEG)
    raise_alert(api.database_url, kind=EventKind.SECURITY, place=EAST.with_device("cam-1"))
    # X-API-Key wins over Authorization, which the document lets generated requests set to anything.
    keys = {
        role: {"X-API-Key": api.key(role, **scope)["Authorization"].split()[1]}
        for role, scope in (("admin", {}), ("police", {"community": EAST.community}))
    }
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json")
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    start = time.monotonic()
    for result in schema.get_all_operations():
        if isinstance(result, Err):  # a part of the document schemathesis cannot read fails the test
            raise result.err()
        operation = result.ok()
        if (operation.method.upper(), operation.path) in NEVER_ENDS:
            continue
        for role, key in keys.items():
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                try:
                    fuzz(api, operation, key, mode, statuses)
                except Exception as exc:  # one operation's failure is reported, the others still run
                    failures.append(f"{operation.method.upper()} {operation.path} as {role} ({mode.value}): {exc}")
    took = time.monotonic() - start
    print(f"{sum(statuses.values())} requests in {took:.0f} s, by status: {dict(sorted(statuses.items()))}")
    assert failures == [], "\n\n".join(failures)
    assert statuses[200] > 0 and sum(n for s, n in statuses.items() if 400 <= s < 500) > 0
    assert not [s for s in statuses if s >= 500]
