"""Security properties of the runtime on the local target: requests are data, never code; request
size and nesting limits; every socket listens on 127.0.0.1 only; mutual TLS between roles refuses
peers without a certificate the CA signed (certificates made here with the openssl CLI).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import pickle
import shutil

import grpc
import pytest

import rel_support as rs
from metaparticle_runtime import CALL_METHOD
from metaparticle_runtime.payload import unwrap, wrap

pytestmark = pytest.mark.timeout(120)

LIMIT = 4 * 1024 * 1024


@pytest.fixture(scope="module")
def sec():
    with rs.Topology("rel_security") as topo:
        yield topo


class _Payload:
    """Unpickling this creates a directory: proof that a request was deserialised as code."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _pickles(marker: str) -> list[bytes]:
    return [pickle.dumps(_Payload(marker), protocol=p) for p in (0, 2, pickle.HIGHEST_PROTOCOL)]


def test_a_pickle_in_a_request_is_data_never_code(sec: rs.Topology, tmp_path) -> None:
    marker = str(tmp_path / "unpickled")
    pickles = _pickles(marker)

    async def run() -> list[tuple[str, rs.Outcome]]:
        answers = []
        for name, entry in sec.entries().items():
            http = rs.HttpClient(f"http://{rs.HOST}:{entry.http_port}")
            grpc_client = rs.GrpcClient(f"{rs.HOST}:{entry.grpc_port}")
            try:
                for data in pickles:
                    answers.append((f"{name} http", await http.post(data, headers={"Content-Type": "application/python-pickle"})))
                    answers.append((f"{name} grpc", await grpc_client.json(data)))
                    answers.append((f"{name} grpc raw", await grpc_client.raw(data)))
                    # Inside a JSON document a pickle is a string like any other: echoed back.
                    doc = {"user": "u", "data": base64.b64encode(data).decode(), "py/object": "os.system", "MP_FUNCTION": "os:system"}
                    answers.append((f"{name} json", await http.post(json.dumps(doc).encode())))
            finally:
                await http.close()
                await grpc_client.close()
        return answers

    answers = asyncio.run(run())
    assert not os.path.exists(marker), "a request was unpickled"
    for where, o in answers:
        if where.endswith("json"):
            assert o.ok and o.body["echo"]["MP_FUNCTION"] == "os:system" and o.body["echo"]["data"], (where, o)
        else:
            assert o.status in (400, "INVALID_ARGUMENT") and o.json_error, (where, o)
    rs.record("security_pickle", {"requests": len(answers), "unpickled": 0, "refused_400": sum(1 for w, _ in answers if not w.endswith("json"))})


def test_request_size_and_nesting_limits(sec: rs.Topology) -> None:
    entry = sec.entry("sec-spread")
    rss: dict[str, int] = {}

    async def run() -> dict[str, rs.Outcome]:
        http = rs.HttpClient(f"http://{rs.HOST}:{entry.http_port}")
        grpc_client = rs.GrpcClient(f"{rs.HOST}:{entry.grpc_port}")
        pad = lambda n: b'{"a":"' + b"x" * (n - 8) + b'"}'  # noqa: E731 - n bytes of JSON
        try:
            answers = {
                "http at limit": await http.post(pad(LIMIT)),
                "http limit+1": await http.post(pad(LIMIT + 1)),
            }
            # Bodies 16 times the limit are refused without being buffered: memory grows by less
            # than one of them (RSS after requests at the limit is the baseline; it is noisy).
            rss["before"] = rs.rss_kib(entry.pid)
            rss["after"] = 0
            for _ in range(3):
                answers["http 64 MiB"] = await http.post(pad(64 << 20))
                rss["after"] = max(rss["after"], rs.rss_kib(entry.pid))
            return answers | {
                "grpc at limit": await grpc_client.json(pad(LIMIT)),
                "grpc limit+1": await grpc_client.json(pad(LIMIT + 1)),
                "grpc 32 MiB": await grpc_client.json(pad(32 << 20)),
                "http depth 64": await http.post(b"[" * 64 + b"]" * 64),
                "http depth 65": await http.post(b"[" * 65 + b"]" * 65),
                "grpc depth 65": await grpc_client.json(b'{"a":' * 65 + b"1" + b"}" * 65),
                "http depth 1e6": await http.post(b"[" * 1_000_000),
                "after": await http.post(b'{"still": "serving"}'),
            }
        finally:
            await http.close()
            await grpc_client.close()

    o = asyncio.run(run())
    sent = len(o) + 2  # three 64 MiB bodies under one key
    growth = rss["after"] - rss["before"]
    assert o["http at limit"].status == 200 and o["grpc at limit"].status == "OK"
    for key in ("http limit+1", "http 64 MiB", "grpc limit+1"):
        assert o[key].status in (413, "RESOURCE_EXHAUSTED") and o[key].body["limit"] == LIMIT, (key, o[key])
    assert o["grpc 32 MiB"].status == "RESOURCE_EXHAUSTED"  # refused by gRPC before the runtime sees it
    assert o["http depth 64"].status == 200
    for key in ("http depth 65", "grpc depth 65", "http depth 1e6"):
        assert o[key].status in (400, "INVALID_ARGUMENT") and "nested deeper than 64" in o[key].body["error"], (key, o[key])
    assert o["after"].ok
    assert growth < 48 * 1024, f"RSS grew by {growth} KiB with 64 MiB bodies"
    rs.record(
        "security_limits",
        {"requests": sent, "max_request_bytes": LIMIT, "max_json_depth": 64, "rss_growth_mib_with_3_64mib_bodies": round(growth / 1024, 1)},
    )


def _listening(topo: rs.Topology) -> tuple[list[tuple[str, str, int, int]], int]:
    """The listening sockets of the topology's processes, and how many replicas it runs. gRPC listens
    on IPv6 sockets bound to the IPv4-mapped address ::ffff:127.0.0.1, which only IPv4 loopback
    reaches: both forms count as 127.0.0.1."""
    procs = topo.processes()
    pids = [p.pid for p in procs.values()] + [topo.cli.pid]
    inodes = set().union(*(rs.socket_inodes(pid) for pid in pids))
    sockets = [s for s in rs.listening_sockets() if s[3] in inodes]
    return [(family, addr.removeprefix("::ffff:"), port, inode) for family, addr, port, inode in sockets], len(procs)


def _addresses(sockets: list[tuple[str, str, int, int]]) -> set[str]:
    return {addr for _, addr, _, _ in sockets}


def test_the_local_target_listens_on_127_0_0_1_only(sec: rs.Topology) -> None:
    sockets, replicas = _listening(sec)
    entries = len(sec.entries())
    # A gRPC port per replica, an HTTP port per entry, a metrics port per other replica.
    assert len(sockets) == replicas + entries + (replicas - entries), sockets
    assert _addresses(sockets) == {"127.0.0.1"}, sockets
    rs.record("security_bind", {"listening_sockets": len(sockets), "addresses": ["127.0.0.1"]})


# -- mutual TLS between roles ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")
    return rs.make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tls_topo(certs):
    with rs.Topology("rel_tls", {"REL_TLS_DIR": os.path.dirname(certs.ca)}) as topo:
        yield topo


def _read(path: str) -> bytes:
    with open(path, "rb") as fh:
        return fh.read()


def _call(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    """One Call to 127.0.0.1:port: "OK" or the status code name."""
    target = f"{rs.HOST}:{port}"
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    try:
        reply = channel.unary_unary(CALL_METHOD)(wrap(b'{"user": "u"}'), timeout=3)
        json.loads(unwrap(reply))
        return "OK"
    except grpc.RpcError as err:
        return err.code().name
    finally:
        channel.close()


def test_roles_talk_mutual_tls_and_refuse_peers_without_a_valid_certificate(tls_topo: rs.Topology, certs: rs.Certs) -> None:
    # End to end: the router reaches both replicas over mutual TLS (the second one may join the
    # rotation a moment after the entry first reports serving: up to 100 requests, 5 s).
    async def through_entry() -> list[rs.Outcome]:
        client = rs.HttpClient(tls_topo.url)
        answers: list[rs.Outcome] = []
        until = asyncio.get_running_loop().time() + 5
        try:
            while len(answers) < 100 and asyncio.get_running_loop().time() < until:
                answers.append(await client.post(json.dumps({"i": len(answers)}).encode()))
                if len({o.body.get("replica") for o in answers if o.ok}) == 2:
                    break
                await asyncio.sleep(0.02)
            return answers
        finally:
            await client.close()

    answers = asyncio.run(through_entry())
    assert all(o.ok for o in answers), answers
    assert {o.body["replica"] for o in answers} == {"tls-spread-replica-0", "tls-spread-replica-1"}

    ca, cert, key = _read(certs.ca), _read(certs.cert), _read(certs.key)
    valid = grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
    clients = {
        "plaintext": None,
        "TLS without a client certificate": grpc.ssl_channel_credentials(root_certificates=ca),
        "client certificate of another CA": grpc.ssl_channel_credentials(
            root_certificates=ca, private_key=_read(certs.rogue_key), certificate_chain=_read(certs.rogue_cert)
        ),
        "client that trusts another CA": grpc.ssl_channel_credentials(
            root_certificates=_read(certs.rogue_ca), private_key=key, certificate_chain=cert
        ),
    }
    results = {}
    for proc in tls_topo.processes().values():
        for name, creds in clients.items():
            results[(proc.name, name)] = _call(proc.grpc_port, creds)
        results[(proc.name, "valid certificate")] = _call(proc.grpc_port, valid)
    refused = {k: v for k, v in results.items() if k[1] != "valid certificate"}
    assert all(v == "UNAVAILABLE" for v in refused.values()), refused
    assert all(v == "OK" for k, v in results.items() if k[1] == "valid certificate"), results

    sockets, replicas = _listening(tls_topo)
    assert _addresses(sockets) == {"127.0.0.1"}, sockets
    rs.record(
        "security_mtls",
        {"roles": replicas, "refused_connections": len(refused), "refused_kinds": sorted(clients), "valid_certificate_calls_ok": replicas},
    )


def test_the_tls_argument_is_refused_off_the_local_target(monkeypatch, certs: rs.Certs) -> None:
    import metaparticle_pulumi as mp
    from metaparticle_pulumi._program import ProgramError, evaluate

    monkeypatch.setenv("REL_TLS_DIR", os.path.dirname(certs.ca))
    loop = asyncio.new_event_loop()  # Pulumi's evaluation wants a current event loop
    asyncio.set_event_loop(loop)
    try:
        with pytest.raises(ProgramError) as info:
            evaluate(rs.PROGRAMS / "rel_tls", target="kubernetes")
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    assert "tls= is not supported on the kubernetes target; use tls_secret" in str(info.value)
    assert mp.SpreadArgs(function=len, tls=(certs.cert, certs.key, certs.ca)).tls == (certs.cert, certs.key, certs.ca)
