"""Emulator knobs, fault rules and the request log.

The server runs on its own thread while tests poke the state from the main
thread, so everything that is read-modify-write (fault budgets, the log, the
output-size cycle) goes through one lock. Plain knob assignments
(``state.latency_s = 0.5``) are atomic in CPython and need no lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any

FAULT_STAGES = ("submit", "run", "status", "result", "cancel", "upload", "token", "file",
                "pricing")

# Status codes answer with that HTTP error; "reset", "truncate",
# "malformed_json", "stall" and "expired" break one HTTP exchange;
# "no_images" and "app_error" change how the job itself ends; "lost_answer" (submit
# only) loses the answer to a submit fal accepted.
FAULT_KINDS = (
    429, 500, 502, 503, 504, 401, 403, 422,
    "reset", "truncate", "malformed_json", "stall", "expired",
    "no_images", "app_error", "lost_answer",
)

# These decide how a job ends rather than how one HTTP answer looks, so they
# are consumed when a job is accepted (submit or run), whatever their stage.
JOB_OUTCOME_KINDS = ("no_images", "app_error")

# These strike after fal has accepted a submit (the job exists and runs, so it is billed):
# "lost_answer" resets the connection instead of sending the submit's answer.
AFTER_ACCEPT_KINDS = ("lost_answer",)

# Knobs restored by reset(); everything else on the state is bookkeeping.
_KNOB_NAMES = (
    "latency_s", "queue_delay_s", "queue_delay_positions", "progress_steps",
    "max_concurrency", "faults", "stall_s", "result_mode", "output_sizes",
    "seededit_image_as_list", "status_stream", "rejected_keys", "forbidden_keys",
    "retired_endpoints", "locked_keys",
)


@dataclass
class FaultRule:
    stage: str
    kind: Any
    times: int = 1  # -1 = forever
    retry_after: float | None = None
    endpoint: str | None = None

    def __post_init__(self) -> None:
        if self.stage not in FAULT_STAGES:
            raise ValueError(f"unknown fault stage {self.stage!r}; use one of {FAULT_STAGES}")
        if isinstance(self.kind, str) and self.kind.isdigit():
            self.kind = int(self.kind)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")

    @classmethod
    def coerce(cls, rule: "FaultRule | dict") -> "FaultRule":
        return rule if isinstance(rule, FaultRule) else cls(**rule)

    def as_dict(self) -> dict:
        return {"stage": self.stage, "kind": self.kind, "times": self.times,
                "retry_after": self.retry_after, "endpoint": self.endpoint}


@dataclass
class EmulatorState:
    # Processing time of one request (split into progress_steps log lines).
    latency_s: float = 0.0
    # Time a request spends IN_QUEUE before it may start.
    queue_delay_s: float = 0.0
    # queue_position reported at the start of queue_delay_s; counts down to 0.
    queue_delay_positions: int = 3
    # Number of "step i/n" log lines emitted while IN_PROGRESS.
    progress_steps: int = 4
    # None = unlimited; otherwise extra requests wait IN_QUEUE (FIFO).
    max_concurrency: int | None = None
    # FaultRule objects or dicts with the same keys.
    faults: list = field(default_factory=list)
    # How long a "stall" fault hangs (ends early when the server stops).
    stall_s: float = 30.0
    # Pillow mode to save results in ("RGBA", "LA", "P", "L", "CMYK").
    result_mode: str | None = None
    # Cycle of [w, h] result sizes, one entry per completed request.
    output_sizes: list | None = None
    # SeedEdit: return {"image": [Image]} like fal's docs example.
    seededit_image_as_list: bool = False
    # fal's status event stream: "serve", or play a server that does not serve it ("off"),
    # drops it after the first event ("drop") or holds it back until the end ("buffer").
    status_stream: str = "serve"
    rejected_keys: set = field(default_factory=set)
    forbidden_keys: set = field(default_factory=set)
    # Endpoints fal no longer serves: submitting to one answers 404, application not found.
    retired_endpoints: set = field(default_factory=set)
    # Keys whose fal account is locked (exhausted balance): fal refuses their submits with
    # 403 "User is locked", while storage, status and results still answer.
    locked_keys: set = field(default_factory=set)

    log: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.RLock()
        self._output_size_index = 0

    # ----- configuration -------------------------------------------------
    def reset(self) -> None:
        """Clear the log, the faults and every knob back to its default."""
        defaults = EmulatorState()
        with self._lock:
            for name in _KNOB_NAMES:
                setattr(self, name, getattr(defaults, name))
            self.log.clear()
            self._output_size_index = 0

    def configure(self, **changes: Any) -> None:
        """Set knobs by name (what POST /_emulator/config does)."""
        known = {f.name for f in fields(self)} - {"log"}
        unknown = set(changes) - known
        if unknown:
            raise ValueError(f"unknown knobs: {sorted(unknown)}")
        with self._lock:
            for name, value in changes.items():
                if name in ("rejected_keys", "forbidden_keys", "retired_endpoints", "locked_keys"):
                    value = set(value or ())
                elif name == "faults":
                    value = [FaultRule.coerce(r) for r in value or ()]
                setattr(self, name, value)

    def add_fault(self, stage: str, kind: Any, times: int = 1,
                  retry_after: float | None = None, endpoint: str | None = None) -> FaultRule:
        rule = FaultRule(stage, kind, times, retry_after, endpoint)
        with self._lock:
            self.faults.append(rule)
        return rule

    def snapshot(self) -> dict:
        """JSON-friendly view of the knobs."""
        out = {}
        for name in _KNOB_NAMES:
            value = getattr(self, name)
            if isinstance(value, set):
                value = sorted(value)
            elif name == "faults":
                value = [FaultRule.coerce(r).as_dict() for r in value]
            out[name] = value
        return out

    # ----- used by the server ---------------------------------------------
    def take_fault(self, stage: str, endpoint: str | None = None,
                   kinds: tuple | None = None) -> FaultRule | None:
        """Consume one use of the first matching live rule, if any."""
        with self._lock:
            for i, raw in enumerate(self.faults):
                rule = FaultRule.coerce(raw)
                self.faults[i] = rule
                if rule.times == 0:
                    continue
                if kinds is None:
                    if rule.stage != stage or rule.kind in JOB_OUTCOME_KINDS + \
                            AFTER_ACCEPT_KINDS:
                        continue
                elif rule.kind not in kinds:
                    continue
                if rule.endpoint is not None and rule.endpoint != endpoint:
                    continue
                if rule.times > 0:
                    rule.times -= 1
                return rule
        return None

    def next_output_size(self) -> tuple[int, int] | None:
        with self._lock:
            sizes = self.output_sizes
            if not sizes:
                return None
            w, h = sizes[self._output_size_index % len(sizes)]
            self._output_size_index += 1
            return int(w), int(h)

    def record(self, kind: str, **data: Any) -> dict:
        entry = {"t": time.monotonic(), "kind": kind, **data}
        with self._lock:
            self.log.append(entry)
        return entry

    # ----- helpers for tests ----------------------------------------------
    def entries(self, kind: str | None = None, endpoint: str | None = None) -> list[dict]:
        with self._lock:
            return [e for e in self.log
                    if (kind is None or e["kind"] == kind)
                    and (endpoint is None or e.get("endpoint") == endpoint)]

    def count(self, kind: str, endpoint: str | None = None) -> int:
        return len(self.entries(kind, endpoint))
