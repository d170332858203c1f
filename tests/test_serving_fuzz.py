"""Fuzzing ``plait serve`` with schemathesis against its own OpenAPI schema: bodies that fit the
schema and bodies that break it, for every operation, and not one 5xx answer.

Generated model names are almost never served ones, so each body is also sent with its
``model`` replaced by a served name: that is what carries random values into tokenisation,
templates, limits and the engine."""

from __future__ import annotations

import pytest
from helpers import LiveServer
from hypothesis import HealthCheck, given, settings
from test_serving import gpt_folder, vlm_folder

from plait.serving.app import Server, create_app
from plait.serving.backends import Limits, load_generator

schemathesis = pytest.importorskip("schemathesis")
EXAMPLES = 80  # per operation and mode: about 25 s in all on two cores


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    limits = Limits(max_tokens=16)
    server = Server(generators=[load_generator(gpt_folder(root, byte_level=True), limits),
                                load_generator(vlm_folder(root), limits)], limits=limits)
    with LiveServer(create_app(server)) as srv:
        yield srv
    server.close()


def send(url: str, op, case, seen: dict) -> None:
    body = case.body
    names = [None]
    if isinstance(body, dict) and "model" in body:
        names += ["tinygpt", "tinyvlm"]
    for name in names:
        if name is not None:
            case.body = body | {"model": name}
        r = case.call(base_url=url, timeout=60)
        seen[(op.path, r.status_code)] = seen.get((op.path, r.status_code), 0) + 1
        assert r.status_code < 500, (op.path, case.body, r.text)
        if r.status_code >= 400:
            assert set(r.json()["error"]) == {"message", "type", "param", "code"}


def fuzzer(url: str, op, mode: str, seen: dict):
    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(op.as_strategy(schemathesis.GenerationMode(mode)))
    def check(case) -> None:
        send(url, op, case, seen)

    return check


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_input_makes_the_server_fail(live, mode):
    schema = schemathesis.openapi.from_url(live.url + "/openapi.json")
    seen: dict[tuple[str, int], int] = {}
    for result in schema.get_all_operations():
        op = result.ok()
        if mode == "negative" and op.method.upper() == "GET":
            continue  # nothing to break in a request without a body or parameters
        fuzzer(live.url, op, mode, seen)()
    if mode == "positive":  # the fuzzing reached the models, not only the model-name check
        assert seen.get(("/v1/completions", 200), 0) > 0, seen
        assert seen.get(("/v1/chat/completions", 200), 0) > 0, seen
