"""The run lifecycle (metaparticle_pulumi._runners) on the local target: ports held from the moment the
evaluation chooses them until each process binds, and replicas that crash before they serve."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from conftest import METAPARTICLE, free_port, port_is_free, write_program

from metaparticle_pulumi import _runners as runners
from metaparticle_pulumi._client import CallError
from metaparticle_pulumi._program import evaluate

ECHO = "import metaparticle_pulumi as mp\n\n\ndef handler(request):\n    return {'echo': request}\n\n\nmp.Spread('api', function=handler, replicas=2)\n"



class Recorder:
    """A `runners.View` that keeps what it was shown."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.answers: list[Any] = []
        self.failures: list[str] = []
        self.stops: list[str] = []
        self.endpoints: dict[str, Any] = {}

    def logs(self, names: list[str]) -> Any:
        return lambda name, line: self.lines.append(f"{name} | {line}")

    def progress(self) -> Any:
        class Quiet:
            def add_task(self, description: str, total: Any = None) -> int:
                return 0

            def advance(self, task: Any, advance: float = 1) -> None:
                pass

            def update(self, task: Any, **fields: Any) -> None:
                pass

        return contextlib.nullcontext(Quiet())

    def built(self, image: Any) -> None:
        pass

    def ready(self, endpoints: dict[str, Any]) -> None:
        self.endpoints = endpoints

    def answer(self, result: Any) -> None:
        self.answers.append(result)

    def serving(self, url: str, detached: bool) -> None:
        pass

    def stopped(self, message: str) -> None:
        self.stops.append(message)

    def failed(self, message: str) -> None:
        self.failures.append(message)


def test_ports_are_held_from_evaluation_until_each_process_binds_and_the_run_works(tmp_path):
    directory = write_program(tmp_path / "held", ECHO)
    entry = free_port()
    evaluation = evaluate(directory, target="local", port=entry)
    (plan,) = evaluation.plans
    ports = [entry] + [p for ps in (*plan.grpc_ports.values(), *plan.metrics_ports.values()) for p in ps]
    assert len(set(ports)) == 6  # the entry, three gRPC ports, the two replicas' metrics ports
    assert sorted(evaluation.ports.held()) == sorted(ports)
    # Between the evaluation and the processes' binds, nothing else can take a port.
    assert [p for p in ports if port_is_free(p)] == []

    view = Recorder()
    code = runners.run(
        runners.ProcessRunner(evaluation), view, ready_timeout=30, stop=threading.Event(), request=b'{"x": 1}'
    )
    assert code == 0, view.failures
    assert [a.body for a in view.answers] == [{"echo": {"x": 1}}]
    assert view.endpoints["patterns"][0]["url"] == f"http://127.0.0.1:{entry}"
    assert view.stops == ["stopped 3 processes"]
    assert evaluation.ports.held() == []
    assert [p for p in ports if not port_is_free(p)] == []


def test_an_error_answer_to_run_request_exits_non_zero(tmp_path):
    source = "import metaparticle_pulumi as mp\n\n\ndef handler(request):\n    raise ValueError('no such user')\n\n\nmp.Service('users', function=handler)\n"
    directory = write_program(tmp_path / "erring", source)
    done = subprocess.run(
        [METAPARTICLE, "run", str(directory), "--port", str(free_port()), "--request", '{"user": 7}'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "error: HTTP 500" in done.stderr and "no such user" in done.stderr
    assert "stopped 1 processes" in done.stderr


CRASH_ONCE = """\
import os
from pathlib import Path

# Each replica's first start fails (a flag file per replica); at deploy time MP_ROLE is unset.
if os.environ.get("MP_ROLE") == "function":
    flag = Path(__file__).with_name("started-" + os.environ["MP_REPLICA"])
    if not flag.exists():
        flag.write_text("1")
        raise RuntimeError("first start fails")


def handle(request):
    return {"echo": request}
"""


def test_a_replica_that_crashes_before_serving_is_restarted_and_the_run_goes_on(tmp_path):
    directory = write_program(
        tmp_path / "crash_once", "import metaparticle_pulumi as mp\nfrom handlers import handle\nmp.Spread('api', function=handle, replicas=2)\n",
        handlers=CRASH_ONCE,
    )
    view = Recorder()
    evaluation = evaluate(directory, target="local", port=free_port())
    code = runners.run(runners.ProcessRunner(evaluation), view, ready_timeout=30, stop=threading.Event(), request=b"[1]")
    assert code == 0, view.failures
    assert [a.body for a in view.answers] == [{"echo": [1]}]
    assert sorted(p.name for p in directory.glob("started-*")) == ["started-api-replica-0", "started-api-replica-1"]
    restarts = [line for line in view.lines if "exited with code 1; restarting in 0.5s" in line]
    assert sorted(line.split(" | ")[0] for line in restarts) == ["api-replica-0", "api-replica-1"]


def test_a_replica_that_always_crashes_before_serving_is_given_up_with_its_last_lines(tmp_path):
    handlers = "import os\nif os.environ.get('MP_ROLE'):\n    raise RuntimeError('broken at every start')\n\ndef handle(request):\n    return request\n"
    directory = write_program(tmp_path / "crashing", "import metaparticle_pulumi as mp\nfrom handlers import handle\nmp.Service('api', function=handle)\n", handlers=handlers)
    view = Recorder()
    started = time.monotonic()
    evaluation = evaluate(directory, target="local", port=free_port())
    code = runners.run(runners.ProcessRunner(evaluation), view, ready_timeout=60, stop=threading.Event(), request=b"{}")
    elapsed = time.monotonic() - started
    assert code == 1 and view.answers == []
    (failure,) = view.failures
    assert failure.startswith("api exited with code 1\n")  # an uncaught exception
    assert failure.endswith("RuntimeError: broken at every start")
    # Restarted with backoff (0.5 s, 1 s, 2 s) three times, then given up: far within the 60 s allowed.
    assert len([line for line in view.lines if "restarting in" in line]) == 3
    assert any("gave up after 3 restarts" in line for line in view.lines)
    assert elapsed < 20, elapsed
    assert view.stops == ["stopped 1 processes"]


def test_an_entry_port_with_connections_lingering_in_time_wait_can_be_held(tmp_path):
    """A server that closed its connections first leaves them in TIME_WAIT on its port; the next run
    may take that port (as `--port` checks it), and holding it must not refuse it."""
    from metaparticle_pulumi._ports import Ports

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: TIME_WAIT on `port`
        client.close()
    time.sleep(0.1)
    assert port_is_free(port)
    ports = Ports(entry=port)
    try:
        assert ports.entry_port() == port and ports.held() == [port]
    finally:
        ports.close()
