"""What a `run --watch` reload plans, offline: which roles keep their processes and ports, which
roll, and in which order the old ones stop; and the refusals of the new `run` options."""

from __future__ import annotations

import subprocess

import pytest

from conftest import METAPARTICLE, free_port, write_program
import metaparticle_pulumi as mp
from metaparticle_pulumi import _ports, _roll
from metaparticle_pulumi._program import evaluate

SEARCH = """
import metaparticle_pulumi as mp


def leaf(request, ctx):
    return [ctx.index]


def gather(results):
    return {{"version": {version}}}


mp.ScatterGather("search", leaf=leaf, gather=gather, leaves=2)
"""


def _specs(evaluation, function_dir):
    return [s for plan in evaluation.plans for s in plan.processes(function_dir)]


def test_a_changed_gather_rolls_the_root_only_and_leaves_keep_their_ports(tmp_path):
    program = write_program(tmp_path / "search", SEARCH.format(version=1))
    entry = free_port()
    (tmp_path / "fn").mkdir()
    first = evaluate(program, target="local", port=entry)
    old = _specs(first, str(tmp_path / "fn"))
    keys = dict(first.ports.keys)
    first.ports.close()

    (program / "__main__.py").write_text(SEARCH.format(version=2))
    second = evaluate(program, target="local", port=entry, reuse_ports=keys)
    try:
        roll = _roll.plan(old, second, str(tmp_path / "fn"))
        assert [s.name for s in roll.keep] == ["search-leaf-0", "search-leaf-1"]
        assert [s.name for s in roll.start] == ["search-root"] and [s.name for s in roll.stop] == ["search-root"]
        (new_root,), (old_root,) = roll.start, roll.stop
        assert new_root.http_port == old_root.http_port == entry  # the HTTP entry keeps its port
        assert new_root.grpc_port != old_root.grpc_port  # told apart from the old root while both run
        # Only the new root's ports stay held (until it serves); the kept leaves' ports are let go.
        assert sorted(second.ports.held()) == sorted({new_root.grpc_port, entry})
    finally:
        second.ports.close()

    running = roll.keep + roll.start
    assert _roll.port_keys(old) == keys  # as the evaluation reserved them
    unchanged = evaluate(program, target="local", port=entry, reuse_ports=_roll.port_keys(running))
    try:
        again = _roll.plan(running, unchanged, str(tmp_path / "fn"))
        assert again.start == [] and again.stop == [] and len(again.keep) == 3
    finally:
        unchanged.ports.close()


BY_REFERENCE = """
import metaparticle_pulumi as mp
from handlers import answer, other

mp.Service("api", function=answer)
mp.Service("side", function=other)
"""


def test_a_changed_module_rolls_the_roles_whose_functions_load_it_by_reference(tmp_path):
    program = write_program(tmp_path / "app", BY_REFERENCE)
    (program / "handlers.py").write_text("def answer(request):\n    return 1\n\n\ndef other(request):\n    return 0\n")
    (tmp_path / "fn").mkdir()
    first = evaluate(program, target="local", port=free_port())
    old = _specs(first, str(tmp_path / "fn"))
    assert all(s.config.function for s in old), "the functions ship by reference"
    keys = dict(first.ports.keys)
    first.ports.close()

    (program / "handlers.py").write_text("def answer(request):\n    return 2\n\n\ndef other(request):\n    return 0\n")
    second = evaluate(program, target="local", reuse_ports=keys)
    try:
        roll = _roll.plan(old, second, str(tmp_path / "fn"))
        # The module both load changed: both roll (which function changed is not known by reference).
        assert sorted(s.name for s in roll.start) == sorted(s.name for s in roll.stop) == ["api", "side"]
    finally:
        second.ports.close()


def test_callers_stop_before_what_they_call():
    class Config:
        def __init__(self, upstreams=(), uses=()):
            self.upstream_names, self.uses = upstreams, uses

    class Spec:
        def __init__(self, topology, role, http_port=None, upstreams=(), uses=()):
            self.topology, self.role, self.http_port = topology, role, http_port
            self.config = Config(upstreams, uses)

        def __repr__(self):
            return self.role

    router = Spec("api", "api-router", 8080, upstreams=("api-replica",))
    replica = Spec("api", "api-replica")
    caller = Spec("front", "front", 8081, uses=(("api", "ipv4:127.0.0.1:1"),))
    assert _roll.retire_order([replica, router, caller]) == [[caller], [router], [replica]]


def test_an_entry_port_the_run_listens_on_is_given_again_as_it_is():
    ports = _ports.Ports()
    port = ports.reserve(key=("api", "http"))
    listener = ports.listen(port)
    assert listener is not None and ports.held() == []
    again = _ports.Ports(reuse={("api", "http"): port}, listening={port})
    try:
        assert again.reserve(key=("api", "http")) == port and again.keys == {("api", "http"): port}
        assert again.held() == [] and again.listen(port) is None  # the run's own listener stays the one
        assert again.reserve(key=("api", "other")) != port
        with pytest.raises(mp.Error, match="in use"):  # unknown to the run: nobody binds next to its listener
            _ports.Ports(reuse={("api", "http"): port}).reserve(key=("api", "http"))
    finally:
        again.close()
        listener.close()


def test_run_refuses_an_unknown_log_format_and_watch_where_it_cannot_roll(tmp_path):
    program = write_program(tmp_path / "app", "import metaparticle_pulumi as mp\n\ndef f(r):\n    return r\n\nmp.Service('api', function=f)\n")
    cases = [
        (["--log-format", "xml"], "--log-format must be text or json, got 'xml'"),
        (["--watch", "--target", "docker"], "--watch applies to --target local, without --request"),
        (["--watch", "--request", "{}"], "--watch applies to --target local, without --request"),
    ]
    for args, message in cases:
        done = subprocess.run(
            [METAPARTICLE, "run", str(program), "--port", str(free_port()), *args],
            capture_output=True, text=True, timeout=60,
        )
        assert done.returncode == 2 and message in done.stderr, (args, done.stderr)
