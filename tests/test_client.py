"""`mp.Client`: calling a pattern from outside any pattern, over gRPC and HTTP, sync and async,
with its errors as `mp.CallError` carrying the status and the pattern's error document."""

from __future__ import annotations

import asyncio

import pytest

import metaparticle_pulumi as mp

from conftest import free_port


@pytest.fixture(params=["grpc", "http"])
def entry(request, hello_world) -> str:
    return hello_world.grpc_url if request.param == "grpc" else hello_world.url


def test_call_answers_the_decoded_json(entry):
    with mp.Client(entry) as client:
        assert client.call({"x": 1}) == {"A": {"x": 1}}
        assert client.call([1, "two"]) == {"A": [1, "two"]}, "the same pooled connection serves a second call"


def test_acall_answers_on_the_running_loop(entry):
    async def main() -> list:
        async with mp.Client(entry) as client:
            return list(await asyncio.gather(*(client.acall({"i": i}) for i in range(20))))

    assert asyncio.run(main()) == [{"A": {"i": i}} for i in range(20)]


def test_an_error_answer_is_a_call_error_with_status_and_document(hello_world):
    with mp.Client(hello_world.grpc_url) as client:
        with pytest.raises(mp.CallError) as info:
            client.call(b"{not json")
    assert info.value.status == "INVALID_ARGUMENT"
    assert info.value.document["code"] == "INVALID_ARGUMENT" and "JSON" in info.value.document["error"]
    with mp.Client(hello_world.url) as client:
        with pytest.raises(mp.CallError) as info:
            client.call(b"{not json")
    assert info.value.status == 400 and info.value.document["code"] == "INVALID_ARGUMENT"
    assert isinstance(info.value, mp.Error)


@pytest.mark.parametrize("scheme", ["grpc", "http"])
def test_nothing_listening_is_a_call_error_within_the_deadline(scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}"
    with mp.Client(url, timeout=2) as client:
        with pytest.raises(mp.CallError, match="cannot reach|UNAVAILABLE|DEADLINE"):
            client.call({"x": 1})


@pytest.mark.parametrize(
    "url, message",
    [("ftp://host:1", "unsupported scheme 'ftp'"), ("grpc://hostonly", "needs a host and a port")],
)
def test_a_bad_url_is_refused_when_the_client_is_made(url, message):
    with pytest.raises(mp.CallError, match=message):
        mp.Client(url)


def test_a_request_that_is_not_json_is_refused_before_sending(hello_world):
    with mp.Client(hello_world.grpc_url) as client:
        with pytest.raises(mp.CallError, match="not JSON"):
            client.call({"x": object()})
        with pytest.raises(mp.CallError, match="not JSON"):
            client.call(float("nan"))
