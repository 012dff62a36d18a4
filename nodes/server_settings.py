"""What the owner of this ComfyUI decides on the server, which no workflow can override.

One private JSON file beside the keys (server_settings.json, 0600 in a 0700
folder), edited in Settings → fal (GET/POST /fal/server-settings):

    allowed_servers     fal-compatible servers (emulator layout) a workflow's base_url may
                        name; they receive the fal key
    proxy_url           a fal-js style proxy every run goes through ("" = none); it adds
                        its own key, the pack sends none
    max_usd_per_prompt  ceiling per prompt, estimated USD (0 = none); workflows can only lower it
    max_usd_per_day     ceiling per calendar day (local time), across restarts (0 = none)
    cache_max_gb        disk space of the result cache

Workflow values (fal Settings widgets) can only lower the spend ceilings. Owners
without the front end use the key CLI:

    python custom_nodes/<this pack>/nodes/keystore.py settings               (show them)
    python custom_nodes/<this pack>/nodes/keystore.py settings max_usd_per_day=50
    python custom_nodes/<this pack>/nodes/keystore.py settings allow|disallow URL
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from . import keystore, state
from .addresses import EgressRefused, normalize
from .state import SpendFileUnreadable, spend_path  # noqa: F401  (routes, tests)
from .state.local import SPEND_FILE_NAME  # noqa: F401

FILE_NAME = "server_settings.json"
MAX_SERVERS = 20

DEFAULTS: dict[str, Any] = {
    "allowed_servers": [],
    "proxy_url": "",
    "max_usd_per_prompt": 5.0,
    "max_usd_per_day": 20.0,
    "cache_max_gb": 2.0,
}
_RANGES = {"max_usd_per_prompt": (0.0, 100000.0), "max_usd_per_day": (0.0, 1000000.0),
           "cache_max_gb": (0.1, 10000.0)}


class SettingsError(ValueError):
    """A value the owner cannot save; the message is one sentence."""


def path() -> Path:
    return keystore.key_file().parent / FILE_NAME


def load() -> dict[str, Any]:
    """The owner's settings, defaults filled in. An unreadable or malformed file counts as
    the defaults (the strictest choice: no extra servers), with one warning per call.
    (From the owner's state store: this file, or Redis shared by several workers.)"""
    try:
        data = state.store().read_doc("server_settings")
    except keystore.KeyStoreError as exc:
        warn(str(exc))
        data = None
    except ValueError:   # a damaged document in Redis
        warn(f"the settings on {state.store().where} are not JSON; using the defaults")
        data = None
    out = dict(DEFAULTS)
    if data is None:
        return out
    if not isinstance(data, dict):
        warn(f"{_where()} is not a JSON object; using the defaults")
        return out
    try:
        out.update(_checked(data, partial=True, strict=False))
    except SettingsError as exc:
        warn(f"{_where()}: {exc}; using the defaults")
    return out


def _where() -> str:
    found = state.store()
    return str(path()) if found.kind == "local" else f"the settings on {found.where}"


def update(changes: Any) -> dict[str, Any]:
    """Apply a partial object; the whole new settings, or SettingsError (nothing saved)."""
    if not isinstance(changes, dict):
        raise SettingsError("send a JSON object with some of: " + ", ".join(DEFAULTS))
    checked = _checked(changes, partial=True, strict=True)

    def change(_stored: Any) -> dict[str, Any]:
        current = load()
        current.update(checked)
        return current
    return state.store().update_doc("server_settings", change)


def _checked(values: dict[str, Any], partial: bool, strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in values.items():
        if name not in DEFAULTS:
            if strict:
                raise SettingsError(f"unknown setting `{name}`; the settings are "
                                    + ", ".join(DEFAULTS))
            continue
        if name == "allowed_servers":
            out[name] = _servers(value)
        elif name == "proxy_url":
            out[name] = _server(value, name) if value else ""
        else:
            low, high = _RANGES[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value) or not low <= value <= high:
                raise SettingsError(f"`{name}` must be a number from {low:g} to {high:g}")
            out[name] = float(value)
    return out


def _server(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise SettingsError(f"`{name}` must be a URL string")
    try:
        return normalize(value)
    except EgressRefused as exc:
        raise SettingsError(f"`{name}`: {exc}") from None


def _servers(value: Any) -> list[str]:
    if not isinstance(value, list) or len(value) > MAX_SERVERS:
        raise SettingsError(f"`allowed_servers` must be a list of at most {MAX_SERVERS} "
                            f"server URLs")
    servers = [_server(v, "allowed_servers") for v in value]
    return [s for i, s in enumerate(servers) if s and s not in servers[:i]]


_warned: set[str] = set()


def warn(message: str) -> None:
    """One warning per distinct message."""
    if message not in _warned:
        _warned.add(message)
        import logging
        logging.getLogger("comfyui_fal_edit").warning("fal server settings: %s", message)


# -- spend by day: the daily ceiling must survive a restart (and count every worker) --

def spent_today() -> float:
    """Today's fal spend (every request sent, at fal's bill or its estimate), from the
    owner's state store. SpendFileUnreadable when what is stored is damaged."""
    return state.store().spent_today()


def add_spend(usd: float) -> None:
    """Add a request's estimate to today's total (kept a week; older days dropped)."""
    if not (math.isfinite(usd) and usd > 0):
        return
    adjust_spend(usd)


def adjust_spend(delta: float) -> None:
    """Change today's total by `delta`: a request sent (+ its estimate), one that never
    reached fal (- its estimate), fal's bill replacing an estimate (+ the difference). The
    total never goes below 0; a damaged file is left as it is (it counts as the ceiling)."""
    state.store().charge(None, delta)


# -- the command line (through keystore.py, which runs as a script) ------------------

def main(argv: list[str]) -> int:
    """settings | settings NAME=VALUE ... | settings allow URL | settings disallow URL"""
    import sys
    try:
        if not argv:
            pass
        elif argv[0] in ("allow", "disallow") and len(argv) == 2:
            wanted = _server(argv[1], "allowed_servers")
            servers = [s for s in load()["allowed_servers"] if s != wanted]
            update({"allowed_servers": servers + [wanted] if argv[0] == "allow" else servers})
        elif all("=" in arg for arg in argv):
            changes = {}
            for arg in argv:
                name, _, text = arg.partition("=")
                try:
                    changes[name.strip()] = json.loads(text)
                except ValueError:
                    changes[name.strip()] = text
            update(changes)
        else:
            print("usage: keystore.py settings [NAME=VALUE ... | allow URL | disallow URL]",
                  file=sys.stderr)
            return 2
    except (SettingsError, keystore.KeyStoreError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        spent: Any = round(spent_today(), 6)
    except SpendFileUnreadable as exc:
        spent = str(exc)
    print(json.dumps({**load(), "spent_today": spent}, indent=1))
    return 0
