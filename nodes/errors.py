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


def is_start_timeout(exc: BaseException) -> bool:
    """fal ended the request because it had not started by X-Fal-Request-Timeout."""
    headers = getattr(exc, "response_headers", None) or {}
    return getattr(exc, "status_code", None) == 504 and \
        str(headers.get("x-fal-request-timeout-type", "")).lower() == "user"


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


BILLING_PAGE = "https://fal.ai/dashboard/billing"
KEYS_PAGE = "https://fal.ai/dashboard/keys"


def _lock_reason(message: Any) -> str | None:
    """fal's 403 for a locked account ("User is locked. Reason: Exhausted balance. ...")
    -> its reason in a few words ("exhausted balance"); None for any other 403."""
    text = str(message)
    if not re.search(r"\b(user|account) is locked\b", text, re.IGNORECASE):
        return None
    found = re.search(r"reason:\s*([^.;]+)", text, re.IGNORECASE)
    return _short(found.group(1), 60).lower() if found else "locked"


def account_scope(exc: BaseException) -> str | None:
    """"account" when fal refused the key's account (a bad key, a locked account: every
    request would be refused), "endpoint" for another 403 (this endpoint would refuse
    every request), None for anything else."""
    import fal_client
    import httpx

    if isinstance(exc, fal_client.FalClientHTTPError):
        status, message = exc.status_code, exc.message
    elif isinstance(exc, httpx.HTTPStatusError):
        status, message = exc.response.status_code, ""
    else:
        return None
    if status == 401 or (status == 403 and _lock_reason(message) is not None):
        return "account"
    return "endpoint" if status == 403 else None


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
                    f"{KEYS_PAGE} and set it again")
        if status == 403:
            reason = _lock_reason(exc.message)
            if reason is not None:
                return (f"fal has locked the account of the key {key_label} (HTTP 403: "
                        f"{reason}); top up or settle the account at {BILLING_PAGE}, then "
                        f"run again")
            return (f"fal refused the key {key_label} access to this model (HTTP 403); check "
                    f"the key's permissions at {KEYS_PAGE} and the account at {BILLING_PAGE}")
        if status == 422:
            return (f"fal refused the input — {_short(_detail_sentence(detail))}; change that "
                    f"input and run again")
        if status == 429:
            return ("fal is rate-limiting this key and retries did not get through (HTTP 429); "
                    "lower concurrency in fal Settings or wait a minute and run again")
        if status == 404:
            return (f"fal answered 404 ({_short(_detail_sentence(detail), 120)}); the endpoint or "
                    f"request no longer exists, run again")
        if is_start_timeout(exc):
            return ("fal's queue did not start it before the start deadline the node sends "
                    "(from timeout_s), so fal ended it unstarted and did not bill it; run "
                    "again when fal is less busy, or raise timeout_s in fal Settings")
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
    if isinstance(exc, RecursionError):   # json's parser, on an answer nested thousands deep
        from .egress import answer_nested_too_deep
        return answer_nested_too_deep()
    from .addresses import EgressRefused
    from .state import StateUnavailable
    if isinstance(exc, (EgressRefused, StateUnavailable)):   # already a sentence naming where
        return str(exc)
    return _short(f"{type(exc).__name__}: {exc}")
