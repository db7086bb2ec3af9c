"""Schemathesis against the OpenAPI description: generated requests to every operation, valid
ones and deliberately invalid ones, find no server error and no status or body outside the
description.

Bounded: a few examples per operation, a few hundred requests in all. The live event stream
is left out (it never ends by design); test_api_events covers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance, status_code_conformance

from ews import metrics
from ews.servers import LocalServers
from tests.api_env import Env, auth, make_env

pytestmark = pytest.mark.integration
MAX_EXAMPLES = 10


@pytest.fixture(scope="module")
def schema_env(servers: LocalServers, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    e = make_env(tmp_path_factory.mktemp("schema"), servers.influx_url, "api_schema")
    e.open_pair()  # something to list, acknowledge and silence
    # readiness answers 503 on purpose while the broker is away (test_api checks that); here
    # the pipeline counts as connected so a 503 can only mean a fault
    e.app.state.ews.ctx.mqtt_ready = lambda: True
    yield e
    e.close()


def _requests() -> float:
    return sum(s.value for m in metrics.API_REQUESTS.collect() for s in m.samples if s.name.endswith("_total"))


def test_no_server_errors(schema_env: Env) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", schema_env.app).exclude(path="/api/v1/events")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 15
    before = _requests()
    calls = 0

    for op, mode in [(op, mode) for op in operations for mode in GenerationMode]:
        @given(case=op.as_strategy(mode))
        @settings(max_examples=MAX_EXAMPLES if mode == GenerationMode.POSITIVE else MAX_EXAMPLES // 2,
                  deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
        def run(case: Any) -> None:
            nonlocal calls
            calls += 1
            case.call_and_validate(headers=auth("root-admin"),
                                   checks=[not_a_server_error, status_code_conformance, response_schema_conformance])

        try:
            run()
        except Unsatisfiable:
            assert mode == GenerationMode.NEGATIVE  # nothing to get wrong (no parameters, no body)
    # every generated request reached the application, and the run stayed small
    assert _requests() - before == calls
    assert 15 <= calls <= 500
    print(f"schemathesis: {calls} requests over {len(operations)} operations")
