"""Secret environment variables as files (`RuntimeConfig.env_dir`): what the runtime loads before
the function is imported, and what it refuses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metaparticle_runtime.config import ConfigError, RuntimeConfig
from metaparticle_runtime.envfiles import load_env_dir, read_env_dir

ROOT = Path(__file__).resolve().parents[1]


def test_each_file_is_one_variable_and_values_are_kept_byte_for_byte(tmp_path):
    (tmp_path / "TOKEN").write_text("s3cret\n")
    (tmp_path / "DB_URL").write_text("postgres://u:p@db/x")
    assert read_env_dir(str(tmp_path)) == {"DB_URL": "postgres://u:p@db/x", "TOKEN": "s3cret\n"}


def test_a_kubernetes_secret_volume_layout_loads_through_its_links(tmp_path):
    """The kubelet writes keys into a timestamped directory behind `..data` and links each key to it."""
    data = tmp_path / "..2026_11_28_04_00_00.1"
    data.mkdir()
    (data / "TOKEN").write_text("s3cret")
    (tmp_path / "..data").symlink_to(data.name)
    (tmp_path / "TOKEN").symlink_to("..data/TOKEN")
    assert read_env_dir(str(tmp_path)) == {"TOKEN": "s3cret"}


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda d: d.rmdir(), "does not exist"),
        (lambda d: (d / "my-token").write_text("x"), "'my-token' in .* is not an environment variable name"),
        (lambda d: (d / "SUB").mkdir(), "is not a file"),
        (lambda d: (d / "BIN").write_bytes(b"\xff\xfe"), "is not UTF-8"),
    ],
)
def test_what_cannot_be_a_variable_is_a_configuration_error_naming_it(tmp_path, make, message):
    directory = tmp_path / "env"
    directory.mkdir()
    make(directory)
    with pytest.raises(ConfigError, match=message):
        read_env_dir(str(directory))


def test_loading_sets_os_environ_and_returns_only_the_names(tmp_path, monkeypatch):
    (tmp_path / "MP_TEST_SECRET").write_text("value-1")
    monkeypatch.delenv("MP_TEST_SECRET", raising=False)
    assert load_env_dir(str(tmp_path)) == ["MP_TEST_SECRET"]
    assert os.environ["MP_TEST_SECRET"] == "value-1"
    monkeypatch.delenv("MP_TEST_SECRET")


def test_the_runtime_loads_the_directory_before_importing_the_function(tmp_path):
    """A module-level read of os.environ sees the value; a bad directory stops the role with exit 2."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "handlers.py").write_text(
        "import os\nTOKEN = os.environ['TOKEN']\ndef handler(request):\n    return TOKEN\n"
    )
    env_dir = tmp_path / "env"
    env_dir.mkdir()
    config = RuntimeConfig(
        role="function", function="handlers:handler", source_dir=str(tmp_path / "app"),
        bind_host="127.0.0.1", grpc_port=0, env_dir=str(tmp_path / "missing"),
    )
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("MP_")}, **config.to_env()}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "runtime"), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-m", "metaparticle_runtime"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert "secret environment directory" in done.stderr and "missing does not exist" in done.stderr
