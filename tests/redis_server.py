"""A real redis-server for the tests and the workers benchmark, on a free 127.0.0.1 port.

Debian's `redis-server` (apt-get install redis-server; .ci/run installs it). Each server
gets a temporary folder of its own and is stopped (SIGTERM: it saves, if persistence is
on) when the block ends. Where no binary is found, `available()` says why, and the tests
that need one skip with that reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

CANDIDATES = ("redis-server", "/usr/bin/redis-server", "/usr/sbin/redis-server",
              "/usr/local/bin/redis-server")


def binary() -> str | None:
    for name in CANDIDATES:
        found = shutil.which(name) if "/" not in name else (name if os.access(name, os.X_OK)
                                                              else None)
        if found:
            return found
    return None


def available() -> str | None:
    """None when a server can be started, else the reason it can't."""
    if binary() is None:
        return ("no redis-server binary on this machine (apt-get install redis-server; "
                ".ci/run installs it)")
    try:
        import redis  # noqa: F401
    except ImportError:
        return "the Python package `redis` is not installed (pip install -r requirements.txt)"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """with RedisServer(password=..., persistent=True) as server: server.url ..."""

    def __init__(self, password: str | None = None, persistent: bool = False,
                 directory: Path | None = None, port: int | None = None,
                 tls: bool = False) -> None:
        self.password = password
        self.tls = tls          # TLS only (rediss://), with a CA of its own (openssl)
        self.persistent = persistent
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix="fal-redis-"))
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return (f"rediss://{auth}127.0.0.1:{self.port}/0"
                    f"?ssl_ca_certs={self.directory / 'ca.pem'}")
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _certificates(self) -> list[str]:
        """A CA and a certificate for 127.0.0.1 signed by it, made with openssl."""
        d = self.directory

        def run(*args: str) -> None:
            subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

        run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
            "/CN=fal test CA", "-keyout", "ca.key", "-out", "ca.pem")
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
            "-keyout", "server.key", "-out", "server.csr")
        (d / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
        run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "server.pem")
        return ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file",
                str(d / "server.pem"), "--tls-key-file", str(d / "server.key"),
                "--tls-ca-cert-file", str(d / "ca.pem"), "--tls-auth-clients", "no"]

    def start(self) -> "RedisServer":
        args = [binary() or "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--dir", str(self.directory), "--daemonize", "no", "--logfile", "",
                "--protected-mode", "yes", "--databases", "2"]
        if self.tls:
            args += self._certificates()
        if self.persistent:
            args += ["--appendonly", "yes", "--appendfsync", "always", "--save", ""]
        else:
            args += ["--appendonly", "no", "--save", ""]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("redis-server did not start: " +
                                   self.process.stderr.read().decode(errors="replace")[-400:])
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not open port {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process is not None and self.process.stderr is not None:
            self.process.stderr.close()
        self.process = None

    def client(self):
        import redis
        return redis.Redis.from_url(self.url)

    def __enter__(self) -> "RedisServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)
