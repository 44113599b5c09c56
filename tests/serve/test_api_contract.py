"""The API's own contract: schemathesis generates requests from /openapi.json and checks every answer.

Bounded (a few dozen examples per operation, derandomised) so it runs in seconds in the default
suite; every status the server sends, and the body's shape, must be what the schema documents.
"""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi")
schemathesis = pytest.importorskip("schemathesis", reason="pip install schemathesis (the dev extra)")

from hypothesis import HealthCheck, settings  # noqa: E402


@pytest.fixture(scope="module")
def api(unit_bundle):
    from allwen.serve.app import create_app

    return create_app(unit_bundle, max_bytes=200_000, max_pixels=4_000_000, max_request_bytes=1_000_000)


def test_schema_documents_models_and_every_error_status(api, unit_bundle):
    from fastapi.testclient import TestClient

    schema = TestClient(api).get("/openapi.json").json()
    predict = schema["paths"]["/api/predict"]["post"]["responses"]
    assert {"200", "400", "413", "415", "422", "429", "503"} <= set(predict)
    for code in ("400", "413", "415", "422", "429", "503"):
        ref = predict[code]["content"]["application/json"]["schema"]["$ref"]
        assert ref.endswith("/ErrorBody")
    assert predict["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/PredictResponse")
    assert schema["paths"]["/health"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/Health")
    assert schema["components"]["schemas"]["ErrorBody"]["properties"]["detail"]["type"] == "string"


def test_schemathesis_finds_no_contract_failure(api):
    """Every operation, 25 generated requests each: no 5xx, every status and body as documented.

    ``positive_data_acceptance`` is left out for ``/api/predict`` only: a schema-valid request there
    carries arbitrary bytes as "images", which the server must refuse (400/413/415/422), and no
    schema can say which bytes decode.
    """
    from hypothesis import given

    from schemathesis.specs.openapi.checks import positive_data_acceptance

    schema = schemathesis.openapi.from_asgi("/openapi.json", api)
    failures, calls = [], {}
    for operation in schema.get_all_operations():
        op = operation.ok()
        name = f"{op.method.upper()} {op.path}"
        calls[name] = 0
        excluded = [positive_data_acceptance] if op.path == "/api/predict" else []

        @settings(max_examples=25, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=op.as_strategy())
        def check(case):
            calls[name] += 1
            case.call_and_validate(excluded_checks=excluded)

        try:
            check()
        except BaseException as exc:  # noqa: BLE001 - schemathesis raises groups of failures; report them all
            failures.append(f"{name}: {' '.join(str(exc).split())[:1500]}")
    assert failures == [], "\n".join(failures)
    assert set(calls) >= {"POST /api/predict", "GET /health", "GET /api/model"}
    assert all(n > 0 for n in calls.values()), calls
