"""How user functions travel to the runtime: by reference when importable from the program, else by value."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from metaparticle_pulumi._functions import FunctionShippingError, ship
from metaparticle_pulumi._program import ProgramError, evaluate
from metaparticle_runtime.config import RuntimeConfig
from metaparticle_runtime.loader import load_function, wants_context
from conftest import EXAMPLES, write_program

HANDLERS = '''
import threading

_lock = threading.Lock()


def handle(request, ctx):
    with _lock:
        return {"handled": request, "index": ctx.index}


class Handlers:
    @staticmethod
    def upper(request):
        return str(request).upper()


shout = lambda request: str(request) + "!"
'''

MAIN = '''
import metaparticle_pulumi as mp
from handlers import Handlers, handle, shout

SUFFIX = "-suffix"


def local(request):
    return {"local": request, "suffix": SUFFIX}


mp.Service("by-ref", function=handle)
mp.Service("static", function=Handlers.upper)
mp.Service("main", function=local)
mp.Service("lambda", function=lambda request: [request])
mp.Service("module-lambda", function=shout)
'''


@pytest.fixture(scope="module")
def shipped(tmp_path_factory) -> dict:
    directory = write_program(tmp_path_factory.mktemp("functions") / "prog", MAIN, handlers=HANDLERS)
    evaluation = evaluate(directory)
    return {p.topology.name: p.topology.entry.function for p in evaluation.patterns} | {"_dir": directory}


def test_a_module_function_of_the_program_travels_by_reference(shipped):
    spec = shipped["by-ref"]
    assert spec.ref == "handlers:handle" and not spec.by_value and spec.pickled is None


def test_a_static_method_of_a_program_class_travels_by_reference(shipped):
    assert shipped["static"].ref == "handlers:Handlers.upper"


@pytest.mark.parametrize("name", ["main", "lambda", "module-lambda"])
def test_main_functions_and_lambdas_travel_by_value(shipped, name):
    spec = shipped[name]
    assert spec.by_value and spec.ref is None
    assert spec.python == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_examples_ship_their_module_functions_by_reference_and_main_functions_by_value():
    by_name = {p.topology.name: p.topology for p in evaluate(EXAMPLES / "scatter_gather").patterns}
    search = by_name["search"]
    assert search.entry.function.ref == "search:merge"
    assert {r.function.ref for r in search.roles[1:]} == {"search:search_leaf"}
    hello = evaluate(EXAMPLES / "hello_world").patterns[0].topology
    assert hello.entry.function.by_value


def test_a_by_value_function_runs_in_a_fresh_process_without_the_program(shipped, tmp_path):
    """The runtime loads the pickled file alone: no __main__ of the program, no program directory."""
    spec = shipped["main"]
    path = tmp_path / spec.file_name
    path.write_bytes(spec.pickled)
    script = (
        "import json, sys\n"
        "from metaparticle_runtime.config import RuntimeConfig\n"
        "from metaparticle_runtime.loader import load_function\n"
        "fn = load_function(RuntimeConfig(role='function', function_file=sys.argv[1]))\n"
        "print(json.dumps(fn({'q': 1})))\n"
    )
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, cwd=tmp_path, timeout=30)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"local": {"q": 1}, "suffix": "-suffix"}


def test_a_by_reference_function_is_imported_from_the_source_dir(shipped, monkeypatch):
    monkeypatch.setattr(sys, "path", list(sys.path))  # load_function puts the source dir on it
    monkeypatch.delitem(sys.modules, "handlers", raising=False)
    spec = shipped["by-ref"]
    fn = load_function(RuntimeConfig(role="function", function=spec.ref, source_dir=str(shipped["_dir"])))
    assert wants_context(fn)
    assert fn.__module__ == "handlers" and fn.__name__ == "handle"
    assert fn({"q": 1}, type("Ctx", (), {"index": 3})) == {"handled": {"q": 1}, "index": 3}
    sys.modules.pop("handlers", None)


def test_a_by_value_file_from_another_python_version_is_refused(shipped, tmp_path):
    path = tmp_path / "fn.pkl"
    path.write_bytes(shipped["lambda"].pickled)
    with pytest.raises(ValueError) as info:
        load_function(RuntimeConfig(role="function", function_file=str(path), function_python="2.7"))
    assert "Python 2.7" in str(info.value)


def test_equal_functions_have_equal_digests_and_different_ones_differ(shipped, tmp_path):
    again = evaluate(shipped["_dir"])
    digests = {p.topology.name: p.topology.entry.function.digest for p in again.patterns}
    assert digests["by-ref"] == shipped["by-ref"].digest
    assert digests["main"] == shipped["main"].digest
    assert len(set(digests.values())) == len(digests)


def test_an_installed_library_function_travels_by_value(tmp_path):
    spec = ship(json.dumps, "function", tmp_path)
    assert spec.by_value
    assert pickle.loads(spec.pickled)({"a": 1}) == '{"a": 1}'


def test_a_runtime_function_travels_by_reference(tmp_path):
    from metaparticle_runtime.hashing import key_hash

    assert ship(key_hash, "key", tmp_path).ref == "metaparticle_runtime.hashing:key_hash"


# -- refusals -------------------------------------------------------------------------------------


def test_a_closure_over_a_lock_cannot_be_shipped_and_the_message_says_why(tmp_path):
    lock = threading.Lock()

    def guarded(request):
        with lock:
            return request

    with pytest.raises(FunctionShippingError) as info:
        ship(guarded, "function", tmp_path)
    message = str(info.value)
    assert "guarded" in message and "cannot be shipped" in message
    assert "lock" in message
    assert "module" in message  # how to fix it


def test_a_program_with_an_unshippable_function_fails_in_one_line(tmp_path):
    main = (
        "import threading\nimport metaparticle_pulumi as mp\n"
        "def make():\n    lock = threading.Lock()\n    def handler(request):\n        with lock:\n            return request\n"
        "    return handler\n"
        "mp.Spread('api', function=make())\n"
    )
    with pytest.raises(ProgramError) as info:
        evaluate(write_program(tmp_path / "prog", main))
    message = str(info.value)
    assert message.startswith("Spread 'api': function 'make.<locals>.handler' cannot be shipped")
    assert "\n" not in message


def no_args():
    return 1


def three(a, b, c):
    return a


def keyword_only(request, *, flag):
    return request


@pytest.mark.parametrize("fn", [no_args, three, keyword_only, lambda: 0], ids=["none", "three", "keyword-only", "lambda"])
def test_a_function_with_the_wrong_arity_is_refused(tmp_path, fn):
    with pytest.raises(FunctionShippingError) as info:
        ship(fn, "function", tmp_path)
    assert "must take (request) or (request, ctx)" in str(info.value)


def one(request):
    return request


def with_context(request, ctx):
    return request


def optional_extra(request, ctx=None, extra=None):
    return request


def variadic(*args):
    return args


def keyword_default(request, *, flag=False):
    return request


@pytest.mark.parametrize("fn", [one, with_context, optional_extra, variadic, keyword_default, len])
def test_functions_taking_request_or_request_and_ctx_are_accepted(tmp_path, fn):
    assert ship(fn, "function", tmp_path).by_value


def test_something_not_callable_is_refused(tmp_path):
    with pytest.raises(FunctionShippingError) as info:
        ship("handler", "function", tmp_path)
    assert "must be callable" in str(info.value)


def test_the_runtime_passes_a_context_only_to_functions_that_take_one():
    assert not wants_context(one)
    assert wants_context(with_context)
    assert wants_context(variadic)
    assert not wants_context(keyword_default)


def test_the_runtime_refuses_a_reference_it_cannot_import(tmp_path):
    with pytest.raises(ValueError) as info:
        load_function(RuntimeConfig(role="function", function="no_such_module_xyz:handler", source_dir=str(tmp_path)))
    assert "cannot import no_such_module_xyz:handler" in str(info.value)
