"""Turning everything that can go wrong into one sentence a ComfyUI user can act on."""

from __future__ import annotations

import asyncio
import re
from typing import Any


class FalNodeError(RuntimeError):
    """Shown to the user as-is by ComfyUI: node, cause and fix in one sentence."""


def redact(text: str, secret: str | None) -> str:
    """Never let a key reach a message, whatever fal or a library put in it."""
    if secret and len(secret) >= 4 and secret in text:
        text = text.replace(secret, "[fal key]")
    return text


def _detail_sentence(detail: Any) -> str:
    """fal's 422 `detail` is a list of {loc, msg, type}; name each field and its problem."""
    if isinstance(detail, list):
        parts = []
        for item in detail[:3]:
            if isinstance(item, dict):
                loc = [str(p) for p in item.get("loc", []) if p not in ("body",)]
                name = ".".join(loc) or "input"
                parts.append(f"`{name}`: {item.get('msg', 'invalid')}")
            else:
                parts.append(str(item))
        more = f" (and {len(detail) - 3} more)" if len(detail) > 3 else ""
        return "; ".join(parts) + more
    if isinstance(detail, dict):
        return str(detail.get("msg") or detail.get("message") or detail)
    return str(detail)


def _short(text: str, limit: int = 200) -> str:
    text = str(text)
    if re.search(r"<(html|body|head)\b", text, re.IGNORECASE):   # a proxy's error page
        title = re.search(r"<title>(.*?)</title>", text, re.IGNORECASE | re.DOTALL)
        text = title.group(1) if title else "an HTML error page"
    # fal's messages may hold several sentences; keep ours one sentence.
    text = re.sub(r"[.!]+\s+(?=\S)", "; ", " ".join(text.split())).rstrip(".! ")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def translate(exc: BaseException, key_label: str) -> str:
    """A fal-client / httpx / our own exception -> the cause-and-fix part of a sentence."""
    import httpx
    import fal_client

    if isinstance(exc, fal_client.FalClientHTTPError):
        status = exc.status_code
        detail = exc.message
        try:
            body = exc.response.json()
            if isinstance(body, dict) and "detail" in body:
                detail = body["detail"]
        except Exception:
            pass
        if status == 401:
            return (f"fal rejected the key {key_label} (HTTP 401); copy a valid key from "
                    f"fal.ai/dashboard/keys and set it again")
        if status == 403:
            return (f"fal refused the key {key_label} access to this model (HTTP 403); check the "
                    f"key's permissions and your fal account balance")
        if status == 422:
            return (f"fal refused the input — {_short(_detail_sentence(detail))}; change that "
                    f"input and run again")
        if status == 429:
            return ("fal is rate-limiting this key and retries did not get through (HTTP 429); "
                    "lower concurrency in fal Settings or wait a minute and run again")
        if status == 404:
            return (f"fal answered 404 ({_short(_detail_sentence(detail), 120)}); the endpoint or "
                    f"request no longer exists, run again")
        if status >= 500:
            return (f"fal had a server error (HTTP {status}: {_short(_detail_sentence(detail), 120)}); "
                    f"run again later, results that arrived are kept")
        return f"fal answered HTTP {status}: {_short(_detail_sentence(detail))}"
    if isinstance(exc, fal_client.FalClientTimeoutError):
        return "fal did not answer in time; run again or raise the timeout in fal Settings"
    if isinstance(exc, httpx.HTTPStatusError):
        return (f"a result file could not be downloaded (HTTP {exc.response.status_code}); the "
                f"result URL expired or is unreadable, run the node again")
    if isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout)):
        return ("could not connect to fal; check your network connection (or the base URL in "
                "fal Settings) and run again")
    if isinstance(exc, httpx.TimeoutException):
        return "fal stopped answering mid-request; check your network and run again"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError,
                        httpx.TransportError)):
        return ("the connection to fal broke repeatedly (the response was cut off); check your "
                "network and run again")
    if isinstance(exc, (ValueError, KeyError, TypeError)) and "json" in type(exc).__name__.lower() \
            or type(exc).__name__ == "JSONDecodeError":
        return "fal sent an unreadable answer (malformed JSON); run again later"
    if isinstance(exc, asyncio.TimeoutError):
        return "fal did not finish in time"
    from .addresses import EgressRefused
    from .state import StateUnavailable
    if isinstance(exc, (EgressRefused, StateUnavailable)):   # already a sentence naming where
        return str(exc)
    return _short(f"{type(exc).__name__}: {exc}")
