"""Test certificates made with the openssl CLI: a CA, and certificates it signs for given names
(each both a server and a client certificate, as every role is both under mutual TLS)."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass(frozen=True)
class Issued:
    """A certificate and its key (PEM files), and the CA file that verifies it."""

    cert: str
    key: str
    ca: str


def _openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed: {result.stderr.strip()}")


def need_openssl() -> None:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is needed to make test certificates")


class CA:
    """A throwaway certificate authority in `directory` (EC P-256, valid two days)."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN={name}",
            cwd=self.directory,
        )
        self.cert = str((self.directory / f"{name}.crt").resolve())

    def issue(self, name: str, dns: list[str] = (), ips: list[str] = ()) -> Issued:  # type: ignore[assignment]
        """A certificate named `name` with a SAN for each of `dns` and `ips`, signed by this CA."""
        sans = [f"DNS:{d}" for d in dns] + [f"IP:{i}" for i in ips]
        if not sans:
            raise ValueError("a certificate needs at least one subject alternative name")
        ext = self.directory / f"{name}.ext"
        ext.write_text(
            f"subjectAltName={','.join(sans)}\n"
            "extendedKeyUsage=serverAuth,clientAuth\n"
            "basicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature,keyEncipherment\n"
        )
        _openssl(
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=self.directory,
        )
        _openssl(
            "x509", "-req", "-in", f"{name}.csr", "-CA", f"{self.name}.crt", "-CAkey", f"{self.name}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", ext.name, cwd=self.directory,
        )
        path = lambda suffix: str((self.directory / f"{name}.{suffix}").resolve())  # noqa: E731
        return Issued(path("crt"), path("key"), self.cert)
