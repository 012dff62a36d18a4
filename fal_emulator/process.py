"""EmulatorProcess: the emulator in its own process, driven over HTTP.

For measurements: an in-thread FalEmulator shares the GIL with the client
under test, so its image work (decode the upload, run the op, encode the
result), which real fal does on its own servers, would be charged to the
client. Here it runs in ``python -m fal_emulator --port 0`` and is
controlled through the /_emulator/ routes.

Log entries carry ``t`` = time.monotonic() of the emulator process; on Linux
that is CLOCK_MONOTONIC, system-wide, so it compares directly with
time.monotonic() in this process.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class EmulatorProcess:
    def __init__(self, latency_s: float = 0.0, host: str = "127.0.0.1",
                 startup_timeout: float = 30.0) -> None:
        self.latency_s, self.host, self.startup_timeout = latency_s, host, startup_timeout
        self.proc: subprocess.Popen | None = None
        self.base_url = ""

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> "EmulatorProcess":
        if self.proc is not None:
            return self
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fal_emulator", "--host", self.host, "--port", "0",
             "--latency", repr(float(self.latency_s))],
            cwd=str(ROOT), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        try:
            self.base_url = self._read_base_url()
            self.request("GET", "_emulator/config")       # answers = ready
        except BaseException:
            self.stop()
            raise
        return self

    def _read_base_url(self) -> str:
        deadline = time.monotonic() + self.startup_timeout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if self.proc.poll() is not None:
                raise RuntimeError(f"emulator exited with code {self.proc.returncode}")
            if left <= 0:
                raise TimeoutError("emulator did not print its base URL")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 1)
                if not chunk:
                    continue
                line += chunk
        url = line.decode().strip()
        if not url.startswith("http"):
            raise RuntimeError(f"unexpected emulator output: {url!r}")
        return url if url.endswith("/") else url + "/"

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdout:
            proc.stdout.close()

    def __enter__(self) -> "EmulatorProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- HTTP control ----------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[Any, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as resp:
            headers = {k.lower(): v for k, v in resp.headers.items()}
            return json.loads(resp.read() or b"null"), headers

    def configure(self, **knobs: Any) -> dict:
        """Set state knobs (EmulatorState field names); returns the new snapshot."""
        return self.request("POST", "_emulator/config", knobs)[0]

    def reset(self) -> None:
        """Clear the log, faults and knobs (stored files and jobs are kept)."""
        self.request("POST", "_emulator/reset")

    def log(self, since: int = 0) -> list[dict]:
        return self.request("GET", f"_emulator/log?since={int(since)}")[0]

    def log_length(self) -> int:
        _, headers = self.request("GET", "_emulator/log?since=1000000000")
        return int(headers["x-log-length"])

    def entries(self, kind: str, since: int = 0) -> list[dict]:
        return [e for e in self.log(since) if e["kind"] == kind]

    def count(self, kind: str, since: int = 0) -> int:
        return len(self.entries(kind, since))

    def cpu_seconds(self) -> float:
        """User + system CPU the emulator process has used so far (Linux)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
