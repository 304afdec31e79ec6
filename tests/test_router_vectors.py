"""The shared routing vectors (runtime/router/testdata/vectors.json): the Python runtime still gives
every answer in them, and the Go router's own tests check the same file (run here when Go is installed)."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from metaparticle_runtime.hashing import jump_hash, key_hash
from metaparticle_runtime.server import answer_within

ROOT = Path(__file__).resolve().parent.parent
ROUTER = ROOT / "runtime" / "router"
VECTORS = ROUTER / "testdata" / "vectors.json"
sys.path.insert(0, str(ROUTER / "testdata"))
import make_vectors  # noqa: E402


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


def test_the_vectors_cover_every_kind_of_case(vectors):
    routing = vectors["routing"]
    codes = {case["expect"].get("code", "OK") for case in routing}
    assert codes == {"OK", "INVALID_ARGUMENT", "RESOURCE_EXHAUSTED"}
    documents = " ".join(case["expect"].get("document", "") for case in routing)
    for needle in ("Expecting value", "Unterminated string", "Invalid \\\\uXXXX escape", "not UTF-8", "nested deeper",
                   "no shard key field", "not a metaparticle.v1.Payload", "is out of range", "NaN is not valid JSON"):
        assert needle in documents, needle
    kinds = {type(json.loads(k["key_json"])).__name__ for k in vectors["key_hash"]}
    assert kinds == {"str", "int", "float", "bool", "NoneType", "list", "dict"}
    hashes = {k["key_json"]: k["hash"] for k in vectors["key_hash"]}
    # Equal numbers hash equally (integral floats as integers); a float that is not integral does not.
    assert hashes["1"] == hashes["1.0"] == hashes["1e0"] and hashes["3.5"] != hashes["1"]
    # Deadlines: the margin at its 5 ms floor, in proportion (a twentieth), and at its 50 ms cap.
    margins = {case["left_us"]: case["left_us"] - case["answer_within_us"] for case in vectors["deadline"]}
    assert margins[3_000] == 5_000 and margins[500_000] == 25_000 and margins[30_000_000] == 50_000


def test_the_python_runtime_gives_every_answer_in_the_vectors(vectors):
    for case in vectors["key_hash"]:
        key = json.loads(case["key_json"])
        assert str(key_hash(key)) == case["hash"], case["key_json"]
        assert {n: jump_hash(key_hash(key), int(n)) for n in case["shards"]} == case["shards"]
    for case in vectors["routing"]:
        message = base64.b64decode(case["message_b64"])
        assert make_vectors.route(message, case["key_path"], case["shards"]) == case["expect"], case["name"]
    for case in vectors["deadline"]:
        assert round(answer_within(case["left_us"] / 1e6) * 1e6) == case["answer_within_us"], case


def test_the_committed_vectors_are_what_the_generator_writes_now():
    out = subprocess.run([sys.executable, str(ROUTER / "testdata" / "make_vectors.py"), "--check"],
                         env={**os.environ, "PYTHONPATH": str(ROOT / "runtime")}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_the_go_router_gives_every_answer_in_the_vectors():
    go = shutil.which("go")
    if go is None:
        if os.environ.get("MP_REQUIRE_ROUTER") == "1":
            pytest.fail("MP_REQUIRE_ROUTER=1 but Go is not installed")
        pytest.skip("Go is not installed: the Go router's vector tests need it")
    out = subprocess.run([go, "test", "-count=1", "-run", "MatchesPython", "./internal/router/"], cwd=ROUTER,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "ok" in out.stdout
