"""One table says what each target does with each deployment option: honour it, ignore it (with a
warning naming the option and the target) or refuse it (an error naming both)."""

from __future__ import annotations

from pathlib import Path

import pulumi
import pytest

import metaparticle_pulumi as mp
from metaparticle_pulumi import testing
from metaparticle_pulumi._targets import CAPABILITIES, HONOURED, IGNORED, REFUSED

from conftest import post_json, run_program, write_program

SAMPLES = {
    "image": "ghcr.io/example/api:1.0",
    "registry": "registry.example.com/team",
    "skip_push": True,
    "namespace": "shop",
    "labels": {"team": "search"},
    "annotations": {"owner": "search"},
    "resources": {"limits": {"memory": "128Mi"}},
    "env": {"GREETING": "hello"},
    "public": True,
    "autoscale": (1, 3, 50),
    "tls_secret": "mtls",
    "tls": ("cert.pem", "key.pem", "ca.pem"),
    "egress": "restricted",
    "monitoring": True,
}
CASES = [(target, option, support) for target, options in CAPABILITIES.items() for option, support in options.items()]


def handler(request):
    return request


def test_the_table_covers_every_deployment_option_on_every_target():
    options = set(SAMPLES)
    for target in ("kubernetes", "docker", "local"):
        assert set(CAPABILITIES[target]) == options, target
        assert set(CAPABILITIES[target].values()) <= {HONOURED, IGNORED, REFUSED}


@pytest.mark.parametrize(("target", "option"), [(t, o) for t, o, s in CASES if s == REFUSED])
def test_a_refused_option_is_an_error_naming_it_and_the_target(target, option):
    with pytest.raises(mp.PatternError) as info:
        with testing.mocked(target=target):
            mp.Spread("api", function=handler, replicas=2, **{option: SAMPLES[option]})
    assert f"{option}= is not supported on the {target} target" in str(info.value)


@pytest.mark.parametrize(("target", "option"), [(t, o) for t, o, s in CASES if s == IGNORED])
def test_an_ignored_option_is_named_in_a_warning(target, option, monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    with testing.mocked(target=target):
        mp.Spread("api", function=handler, replicas=2, **{option: SAMPLES[option]})
    assert f"Spread 'api': {option}= does not apply to the {target} target, which ignores it" in warnings


def test_an_option_a_target_honours_draws_no_warning(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(pulumi.log, "warn", lambda message, *args, **kwargs: warnings.append(message))
    honoured = {o: SAMPLES[o] for o, s in CAPABILITIES["kubernetes"].items() if s == HONOURED and o != "image"}
    with testing.mocked(target="kubernetes"):
        mp.Spread("api", function=handler, replicas=2, **honoured)
    assert not [w for w in warnings if "does not apply" in w]


def test_the_local_target_gives_env_to_every_process(tmp_path: Path):
    """env= is honoured locally too: plain values and secrets reach the function's os.environ."""
    program = write_program(
        tmp_path / "env_program",
        "import os\n"
        "import pulumi\n"
        "import metaparticle_pulumi as mp\n"
        "def handler(request):\n"
        "    return {'greeting': os.environ['GREETING'], 'token': os.environ['TOKEN']}\n"
        "api = mp.Spread('api', function=handler, replicas=2,\n"
        "                env={'GREETING': 'hello', 'TOKEN': pulumi.Output.secret('s3cret')})\n"
        "pulumi.export('url', api.url)\n",
    )
    with run_program(program, tmp=tmp_path) as running:
        for _ in range(4):
            reply = post_json(running.url, {"q": 1})
            assert reply.status == 200, reply.body
            assert reply.body == {"greeting": "hello", "token": "s3cret"}


def test_local_env_may_not_replace_the_runtime_configuration():
    with pytest.raises(mp.PatternError, match="env MP_TIMEOUT is set by metaparticle"):
        with testing.mocked(target="local"):
            mp.Service("api", function=handler, env={"MP_TIMEOUT": "1"})


def test_an_unknown_egress_mode_is_refused():
    with pytest.raises(mp.PatternError, match="egress must be 'open' or 'restricted', got 'closed'"):
        with testing.mocked(target="kubernetes"):
            mp.Service("api", function=handler, egress="closed")


@pytest.mark.parametrize("target", ["kubernetes", "docker", "local"])
def test_every_target_checks_env_names_and_the_runtime_s_own_variables_alike(target):
    with pytest.raises(mp.PatternError, match="'A=B' is not an environment variable name"):
        with testing.mocked(target=target):
            mp.Service("api", function=handler, env={"A=B": "x"})
    with pytest.raises(mp.PatternError, match="env MP_REPLICA is set by metaparticle"):
        with testing.mocked(target=target):
            mp.Service("api", function=handler, env={"MP_REPLICA": "x"})
