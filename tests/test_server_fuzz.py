"""A live ``multimodal-rag serve`` fuzzed from its own OpenAPI document with schemathesis.

Every operation of ``/openapi.json`` gets requests generated from its schema, valid ones and
invalid ones (wrong types, values out of range, missing fields, bodies of another type), and
every answer must be what the document says: no server error (a 5xx other than a documented
503), no status the operation does not list, no content type it does not list, no JSON body
its schema refuses, and no invalid request accepted. The number of examples is kept small so
that the run takes seconds.

A request the schema allows may still be refused, with a documented status and the error
body: the schema cannot say which bytes are a readable image, which JSON is a filter in the
library's language, or that lexical mode needs a text. So schemathesis's "valid data is
accepted" check is left out, and every other one runs.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="the server extra is not installed")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (it is in the dev extra)")

from hypothesis import HealthCheck, given, settings  # noqa: E402

from helpers import ColorEmbedder, solid  # noqa: E402
from multimodal_rag import MultimodalRAG  # noqa: E402
from test_server import _serve  # noqa: E402

# Few examples per operation (and per kind, valid or not): the point is every path through the
# schema, not volume, and the whole run stays within seconds on two cores. Derandomized, so a
# run is the same run every time: a failure in CI is reproduced by running the test again.
EXAMPLES = 25

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[str]]]:
    """A real server on a free loopback port, over a small knowledge base: its address and ids."""
    kb = tmp_path_factory.mktemp("fuzz") / "kb"
    colors = ["red", "green", "blue", "yellow"]
    with MultimodalRAG.create(kb, embedder=ColorEmbedder()) as rag:
        ids = list(
            rag.add(
                [solid(color, (32, 24)) for color in colors],
                descriptions=[f"A {color} square." for color in colors],
                metadata=[{"shade": color, "price": i} for i, color in enumerate(colors)],
            )
        )
    server, port = _serve(kb)
    try:
        yield f"http://127.0.0.1:{port}", ids
    finally:
        server.terminate()
        log = server.communicate(timeout=30)[1]
    assert "Traceback" not in log and "ERROR" not in log, log


def test_every_answer_of_a_live_server_is_what_its_schema_says(served: tuple[str, list[str]]) -> None:
    from schemathesis import GenerationMode
    from schemathesis.checks import positive_data_acceptance

    url, ids = served
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
    schema.hook("filter_case")(_sendable)
    operations = [result.ok() for result in schema.get_all_operations()]
    paths = {operation.path for operation in operations}
    assert paths == {"/", "/healthz", "/v1/info", "/v1/search", "/v1/ask", "/v1/images/{id}"}
    statuses: Counter[tuple[str, int]] = Counter()
    for operation in operations:
        inputs = operation.definition.raw.get("parameters") or operation.definition.raw.get("requestBody")
        # Invalid requests need something to make invalid: a parameter or a body.
        strategies = [operation.as_strategy(mode) for mode in GenerationMode if inputs or mode.is_positive]
        if operation.path == "/v1/images/{id}":
            # Generated ids are almost never stored ones: the thumbnails of real ids too.
            strategies.append(operation.as_strategy(path_parameters={"id": ids[0]}))
        for strategy in strategies:

            @given(case=strategy)
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                derandomize=True,
            )
            def fuzz(case: Any) -> None:
                response = case.call_and_validate(excluded_checks=[positive_data_acceptance])
                statuses[(case.operation.label, response.status_code)] += 1

            fuzz()
    for (label, status), count in sorted(statuses.items()):
        print(f"{label}: {status} x {count}")
    print(f"{sum(statuses.values())} requests")
    assert not [status for _, status in statuses if status >= 500 and status != 503]
    # What the document promises a client was seen, not only refusals.
    seen = {label for label, status in statuses if status == 200}
    assert seen == {operation.label for operation in operations}, statuses


def _sendable(context: Any, case: Any) -> bool:
    """Whether a case means on the wire what the fuzzer meant by it.

    A form field is text: a null or a number meant for a text field arrives as the text "null"
    or "5", which is a valid text, so the server is right to accept it. Such forms are dropped;
    a text meant for a number (k="abc") stays.
    """
    if not isinstance(case.body, dict) or "form" not in (case.media_type or ""):
        return True
    content = case.operation.definition.raw["requestBody"]["content"][case.media_type]
    properties = content["schema"].get("properties", {})
    return not any(
        _takes_text(properties.get(name, {})) and not isinstance(value, (str, bytes))
        for name, value in case.body.items()
    )


def _takes_text(field: dict[str, Any]) -> bool:
    return field.get("type") == "string" or any(_takes_text(choice) for choice in field.get("anyOf", ()))
