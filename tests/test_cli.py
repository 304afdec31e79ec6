"""The `metaparticle` command: clear one-line failures, `call` over every scheme, clean stops."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import (
    EXAMPLES,
    METAPARTICLE,
    free_port,
    http,
    is_alive,
    post_json,
    process_identity,
    start,
    wait_until,
    write_program,
)

HEADER = "import metaparticle_pulumi as mp\n\n\ndef handler(request):\n    return request\n\n\n"


def metaparticle(*args: str, input: str | None = None, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([METAPARTICLE, *args], capture_output=True, text=True, input=input, timeout=timeout, cwd=cwd)


def assert_one_line_error(done: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Failed, with exactly one line on stderr, starting with "error:", containing `fragments`."""
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "Traceback" not in done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("error: ")
    for fragment in fragments:
        assert fragment in lines[0]
    return lines[0]


# -- metaparticle run: refusals -------------------------------------------------------------------

BROKEN_PROGRAMS = {
    "no-patterns": ("import pulumi\npulumi.export('x', 1)\n", ["declares no patterns", "mp.Service("]),
    "syntax-error": (HEADER + "def broken(request)\n    return 1\n", ["__main__.py:8", "SyntaxError"]),
    "negative-shards": (HEADER + "mp.Shard('users', function=handler, shards=-3, key='user')\n", ["Shard 'users'", "shards must be a positive integer, got -3"]),
    "missing-gather": (HEADER + "mp.ScatterGather('search', leaf=handler, leaves=2)\n", ["ScatterGather 'search'", "missing required argument 'gather'"]),
    "program-raises": (HEADER + "raise RuntimeError('no [bold]config[/] here')\n", ["__main__.py:8", "RuntimeError: no [bold]config[/] here"]),
    "unshippable": (
        HEADER + "import threading\nlock = threading.Lock()\nmp.Service('locked', function=lambda r: lock.locked())\n",
        ["Service 'locked'", "cannot be shipped", "lock"],
    ),
}


@pytest.mark.parametrize("name", list(BROKEN_PROGRAMS))
def test_run_refuses_a_broken_program_with_one_clear_line(tmp_path, name):
    source, fragments = BROKEN_PROGRAMS[name]
    directory = write_program(tmp_path / name.replace("-", "_"), source)
    done = metaparticle("run", str(directory), "--port", str(free_port()), cwd=tmp_path)
    assert_one_line_error(done, *fragments)
    assert done.returncode == 2


def test_run_refuses_a_directory_that_does_not_exist(tmp_path):
    done = metaparticle("run", str(tmp_path / "nowhere"), "--port", str(free_port()))
    assert_one_line_error(done, str(tmp_path / "nowhere"), "is not a directory")


def test_run_refuses_a_directory_without_a_program(tmp_path):
    done = metaparticle("run", str(tmp_path), "--port", str(free_port()))
    assert_one_line_error(done, "no __main__.py")


def test_run_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = metaparticle("run", str(EXAMPLES / "hello_world"), "--port", str(port))
    assert_one_line_error(done, f"port {port} on 127.0.0.1 is in use", "--port")


def test_run_reports_a_replica_that_cannot_start_and_leaves_nothing_running(tmp_path):
    handlers = "import os\nif os.environ.get('MP_ROLE'):\n    raise ImportError('only importable at deploy time')\n\ndef handle(request):\n    return request\n"
    directory = write_program(tmp_path / "crashing", "import metaparticle_pulumi as mp\nfrom handlers import handle\nmp.Spread('api', function=handle, replicas=2)\n", handlers=handlers)
    port = free_port()
    done = metaparticle("run", str(directory), "--port", str(port), "--endpoints-json", str(tmp_path / "e.json"), cwd=tmp_path)
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("error: api-replica-") and lines[0].endswith("exited with code 2")
    assert "Traceback" not in done.stderr
    assert "configuration error: cannot import handlers:handle: only importable at deploy time" in done.stderr
    assert '{"ts"' not in done.stderr  # the replica's last log lines, readable
    assert not (tmp_path / "e.json").exists()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(("127.0.0.1", port))  # nothing kept the entry port


# -- metaparticle call ----------------------------------------------------------------------------


def test_call_refuses_a_request_that_is_not_json():
    done = metaparticle("call", f"http://127.0.0.1:{free_port()}", "{'single': 'quotes'}")
    assert_one_line_error(done, "the request is not valid JSON")
    assert done.returncode == 2


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_call_of_an_unreachable_url_fails_with_one_clear_line(scheme):
    url = f"{scheme}://127.0.0.1:{free_port()}"
    done = metaparticle("call", url, "{}", timeout=30)
    assert_one_line_error(done, f"cannot reach {url}")
    assert done.returncode == 1
    assert done.stdout == ""


@pytest.mark.parametrize(
    "url, fragment",
    [
        ("ftp://127.0.0.1:21", "unsupported scheme 'ftp'"),
        ("127.0.0.1:8080", "unsupported scheme"),
        ("grpc://127.0.0.1", "needs a host and a port"),
    ],
)
def test_call_refuses_an_unsupported_url(url, fragment):
    assert_one_line_error(metaparticle("call", url, "{}"), fragment)


def test_call_reads_the_request_from_stdin(hello_world):
    for url in (hello_world.url, hello_world.grpc_url):
        done = metaparticle("call", url, input='{"from": "stdin", "n": [1, 2]}\n')
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == {"A": {"from": "stdin", "n": [1, 2]}}


def test_call_refuses_an_empty_stdin():
    assert_one_line_error(metaparticle("call", f"http://127.0.0.1:{free_port()}", input=""), "not valid JSON")


# -- stopping -------------------------------------------------------------------------------------

SLOW = """
import time

import metaparticle_pulumi as mp


def slow(request, ctx):
    time.sleep(min(float(request.get("sleep", 0)), 3.0))
    return {"replica": ctx.replica, "slept": request.get("sleep", 0)}


mp.Spread("slow", function=slow, replicas=2, timeout=5)
"""


def test_sigterm_stops_every_process_frees_every_port_and_exits_0(tmp_path):
    running = start(write_program(tmp_path / "slow", SLOW), tmp=tmp_path)
    children = running.children()
    assert len(children) == 3  # router and two replicas
    assert running.stop(signal.SIGTERM) == 0
    running.assert_stopped_cleanly()
    assert "stopped 3 processes" in running.log()


def test_a_request_in_flight_when_run_is_stopped_still_gets_its_answer(tmp_path):
    running = start(write_program(tmp_path / "slow", SLOW), tmp=tmp_path)
    answer: dict = {}
    thread = threading.Thread(target=lambda: answer.update(reply=post_json(running.url, {"sleep": 1.0})))
    thread.start()
    try:
        time.sleep(0.3)  # the request is in the replica's function now
        stopped_at = time.monotonic()
        assert running.stop(signal.SIGINT) == 0
        took = time.monotonic() - stopped_at
    finally:
        thread.join(10)
    running.assert_stopped_cleanly()
    assert answer["reply"].status == 200 and answer["reply"].body["slept"] == 1.0
    assert took < 5.0


def test_a_function_stuck_past_its_deadline_does_not_hold_up_the_stop(tmp_path):
    program = "import time\nimport metaparticle_pulumi as mp\n\ndef stuck(request):\n    time.sleep(30)\n\nmp.Service('stuck', function=stuck, timeout=0.5)\n"
    running = start(write_program(tmp_path / "stuck", program), tmp=tmp_path)
    reply = post_json(running.url, {})
    assert reply.status == 504 and reply.body["code"] == "DEADLINE_EXCEEDED"
    stopped_at = time.monotonic()
    assert running.stop(signal.SIGTERM) == 0
    assert time.monotonic() - stopped_at < 5.0  # not the 30 s of the stuck call, nor the 10 s kill grace
    running.assert_stopped_cleanly()


def test_sigterm_while_the_topology_is_starting_stops_what_was_started(tmp_path):
    process = subprocess.Popen(
        [METAPARTICLE, "run", str(EXAMPLES / "scatter_gather"), "--port", str(free_port())],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=tmp_path,
    )
    from conftest import descendants

    try:
        assert wait_until(lambda: descendants(process.pid), 30, 0.01), "no process was started"
        started = [i for i in (process_identity(p) for p in descendants(process.pid)) if i]
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert wait_until(lambda: not [i for i in started if is_alive(i)], 3)


# -- metaparticle up / destroy: refusals before the engine runs -------------------------------------


def test_up_without_a_pulumi_cli_says_how_to_get_one(tmp_path, monkeypatch):
    program = write_program(tmp_path / "app", HEADER + "mp.Service('api', function=handler)\n")
    env = {k: v for k, v in os.environ.items() if k != "PATH"}
    env["PATH"] = str(Path(METAPARTICLE).parent)  # the virtualenv's scripts only: no pulumi there
    done = subprocess.run([METAPARTICLE, "up", str(program)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 1
    assert_one_line_error(done, "no `pulumi` on PATH", "scripts/cluster build")


def test_up_refuses_a_directory_without_a_project(tmp_path):
    (tmp_path / "__main__.py").write_text("")
    done = metaparticle("up", str(tmp_path))
    assert done.returncode == 2
    assert_one_line_error(done, "has no Pulumi.yaml")


def test_up_refuses_a_config_pair_without_a_value(tmp_path):
    program = write_program(tmp_path / "app", HEADER + "mp.Service('api', function=handler)\n")
    done = metaparticle("up", str(program), "-c", "replicas")
    assert done.returncode == 2
    assert_one_line_error(done, "--config takes KEY=VALUE")


def test_cancel_refuses_a_directory_without_a_project(tmp_path):
    (tmp_path / "__main__.py").write_text("")
    done = metaparticle("cancel", str(tmp_path))
    assert done.returncode == 2
    assert_one_line_error(done, "has no Pulumi.yaml")


@pytest.mark.skipif(shutil.which("pulumi") is None, reason="no Pulumi CLI on PATH (scripts/cluster build; eval \"$(scripts/cluster env)\")")
def test_cancel_of_a_stack_that_does_not_exist_says_so_and_creates_nothing(tmp_path):
    program = write_program(tmp_path / "app", HEADER + "mp.Service('api', function=handler)\n")
    backend = tmp_path / "backend"
    backend.mkdir()
    env = {**os.environ, "PULUMI_BACKEND_URL": backend.as_uri(), "PULUMI_CONFIG_PASSPHRASE": "x", "PULUMI_SKIP_UPDATE_CHECK": "1"}
    done = subprocess.run([METAPARTICLE, "cancel", str(program), "--stack", "nowhere"], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 1
    assert_one_line_error(done, "no stack 'nowhere'")
    assert not (program / "Pulumi.nowhere.yaml").exists()


def test_a_refusal_is_one_line_whatever_the_hash_seed(tmp_path):
    """Pulumi's mocks give executor threads event loops of their own; left open they were finalised
    during interpreter shutdown, and for most hash seeds Python then printed "Exception ignored ...
    Invalid file descriptor" after the error. The CLI now closes them before it exits."""
    source, fragments = BROKEN_PROGRAMS["unshippable"]
    directory = write_program(tmp_path / "unshippable", source)
    for command in ([METAPARTICLE], [sys.executable, "-m", "metaparticle_pulumi"]):
        for seed in range(1, 7):
            done = subprocess.run(
                [*command, "run", str(directory), "--port", str(free_port())],
                capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONHASHSEED": str(seed)},
            )
            assert done.returncode == 2
            assert_one_line_error(done, *fragments)


def test_ctrl_c_during_an_engine_operation_waits_once_and_quits_at_the_second():
    """The first Ctrl-C leaves the engine (which the terminal interrupts too) to cancel and unlock
    the stack; tests/test_engine.py checks that with a real engine. A second one quits at once."""
    from metaparticle_pulumi._cli import _ctrl_c_lets_the_engine_cancel

    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with _ctrl_c_lets_the_engine_cancel() as interrupted:
            os.kill(os.getpid(), signal.SIGINT)
            assert wait_until(lambda: interrupted.count == 1, 2)
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(2)
    assert interrupted.count == 2
    assert signal.getsignal(signal.SIGINT) is before
