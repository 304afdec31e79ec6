"""The runtime owns its contract: `RuntimeConfig` round-trips through the environment, and the
deploy side never spells an environment variable of its own."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

import pytest

from metaparticle_runtime.config import ENV, ConfigError, RuntimeConfig

PACKAGE = Path(__file__).resolve().parent.parent / "metaparticle_pulumi"

CONFIGS = [
    RuntimeConfig(role="function", replica="api-replica-0", function="app:handler", index=1, count=3),
    RuntimeConfig(
        role="function",
        pattern="Spread",
        name="api",
        role_name="api-replica",
        replica="api-replica-1",
        bind_host="127.0.0.1",
        grpc_port=5001,
        function="handlers:handler",
        source_dir="/app",
        max_request_bytes=1024,
        max_json_depth=8,
        max_in_flight=3,
        env_dir="/run/metaparticle/env",
        metrics_port=9090,
        reuse_port=True,
        max_response_bytes=2048,
        parent_pid=4242,
        router="python",
        router_binary="/opt/metaparticle/bin/metaparticle-router",
        uses=(("search", "dns:///search.prod.svc.cluster.local:50051"), ("users", "ipv4:127.0.0.1:5001")),
        event_loop="asyncio",
        log_level="DEBUG",
        storage_dir="/var/lib/metaparticle/data",
    ),
    RuntimeConfig(role="function", replica="polyglot-0", function_url="http://127.0.0.1:8081", index=0, count=2),
    RuntimeConfig(role="spread", replica="r", http_port=8080, http_fd=7, upstreams=("dns:///a:50051",), upstream_names=("a",), retries=0),
    RuntimeConfig(role="shard", replica="r", upstreams=("x", "y"), upstream_names=("s0", "s1"), key_path="user.id", timeout=2.5),
    RuntimeConfig(
        role="gather",
        replica="root",
        upstreams=("l0", "l1"),
        upstream_names=("leaf-0", "leaf-1"),
        upstream_replicas=(2, 3),
        on_missing="partial",
        hedge_after=0.05,
        idempotent=False,
        function_file="/app/gather.pkl",
        function_python="3.11",
        drain_seconds=5,
        tls_cert="/tls/tls.crt",
        tls_key="/tls/tls.key",
        tls_ca="/tls/ca.crt",
        threads=4,
    ),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: c.role)
def test_a_configuration_survives_the_trip_through_the_environment(config):
    env = config.to_env()
    assert all(name.startswith("MP_") and isinstance(value, str) for name, value in env.items())
    assert RuntimeConfig.from_env(env) == config


def test_every_setting_is_exercised_away_from_its_default_by_the_round_trip():
    """A setting added to the dataclass but not read back by from_env fails the round trip above."""
    defaults = {f.name: f.default for f in fields(RuntimeConfig)}
    untried = {name for name in defaults if all(getattr(c, name) == defaults[name] for c in CONFIGS)}
    assert untried <= {"replica"}, f"no config above sets {sorted(untried)}"


def test_every_setting_has_exactly_one_environment_variable():
    assert set(ENV) == {f.name for f in fields(RuntimeConfig)}
    assert len(set(ENV.values())) == len(ENV)


def test_settings_at_their_defaults_stay_out_of_the_environment():
    env = RuntimeConfig(role="function", replica="r", function="m:f").to_env()
    assert "MP_DRAIN_SECONDS" not in env and "MP_THREADS" not in env and "MP_TLS_CERT" not in env
    assert env["MP_TIMEOUT"] == "10.0" and env["MP_RETRIES"] == "2"


def test_a_malformed_variable_is_a_clear_error():
    with pytest.raises(ConfigError, match="MP_UPSTREAMS must be a JSON list"):
        RuntimeConfig.from_env({"MP_ROLE": "spread", "MP_UPSTREAMS": "{not json"})
    with pytest.raises(ConfigError, match="MP_GRPC_PORT must be a int"):
        RuntimeConfig.from_env({"MP_ROLE": "function", "MP_FUNCTION": "m:f", "MP_GRPC_PORT": "http"})


def test_the_deploy_side_spells_no_runtime_variable():
    spelled = {
        f"{path.relative_to(PACKAGE)}:{n}": line.strip()
        for path in PACKAGE.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if re.search(r"[\"']MP_[A-Z_]+[\"']", line)
    }
    assert not spelled, spelled


def test_tls_is_always_mutual_a_certificate_without_a_ca_is_refused():
    base = {"MP_ROLE": "function", "MP_FUNCTION": "m:f", "MP_TLS_CERT": "/tls/tls.crt", "MP_TLS_KEY": "/tls/tls.key"}
    with pytest.raises(ConfigError, match="MP_TLS_CERT needs MP_TLS_CA"):
        RuntimeConfig.from_env(base)
    assert RuntimeConfig.from_env({**base, "MP_TLS_CA": "/tls/ca.crt"}).tls_ca == "/tls/ca.crt"
