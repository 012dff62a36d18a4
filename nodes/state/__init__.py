"""Where the pack's state lives: local files (the default) or Redis, the owner's choice.

    COMFYUI_FAL_REDIS_URL       redis://[:PASSWORD@]host:port/db or rediss://... (TLS):
                                share the result cache, upload memory, journal, leases,
                                today's spend and holds, the owner's settings and the price
                                book with every worker given the same URL and prefix
    COMFYUI_FAL_REDIS_PREFIX    namespace of this deployment's keys (or ?prefix= in the URL;
                                default "comfyui-fal:")
    COMFYUI_FAL_REDIS_FALLBACK  "local": when Redis can't be reached, use this worker's own
                                files instead of failing (its spend then escapes the shared
                                ceiling, so this is off unless the owner asks)

Server environment only: a workflow can't name a store. See base.py for the interface.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from .base import (CeilingReached, SpendFileUnreadable, StateStore,  # noqa: F401
                   StateUnavailable)
from .local import LocalStore, spend_path  # noqa: F401

ENV_REDIS_URL = "COMFYUI_FAL_REDIS_URL"
ENV_REDIS_PREFIX = "COMFYUI_FAL_REDIS_PREFIX"
ENV_REDIS_FALLBACK = "COMFYUI_FAL_REDIS_FALLBACK"
ENV_CACHE_DIR = "COMFYUI_FAL_CACHE_DIR"

_lock = threading.Lock()
_stores: dict[tuple, StateStore] = {}


def cache_directory() -> Path | None:
    """Where results persist locally: ComfyUI's user directory, or COMFYUI_FAL_CACHE_DIR.

    Outside ComfyUI without the variable there is no safe place to write, so the cache
    stays in memory.
    """
    override = os.environ.get(ENV_CACHE_DIR)
    if override:
        return Path(override)
    try:
        import folder_paths  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(folder_paths.get_user_directory()) / "comfyui-fal-edit" / "cache"


def store() -> StateStore:
    """The owner's state store, chosen by the environment (tests change it between runs)."""
    url = os.environ.get(ENV_REDIS_URL, "").strip()
    directory = cache_directory()
    if url:
        fallback = os.environ.get(ENV_REDIS_FALLBACK, "").strip().lower() == "local"
        wanted: tuple = ("redis", url, os.environ.get(ENV_REDIS_PREFIX, "").strip(),
                         fallback, directory)
    else:
        wanted = ("local", directory)
    with _lock:
        found = _stores.get(wanted)
        if found is None:
            found = _stores[wanted] = _open(wanted)
        return found


def _open(wanted: tuple) -> StateStore:
    if wanted[0] == "local":
        return LocalStore(wanted[1])
    from .redis_store import RedisStore, public_name
    _, url, prefix, fallback, directory = wanted
    try:
        return RedisStore(url, prefix or None, LocalStore(directory) if fallback else None)
    except ValueError:   # redis-py's words may quote the URL, password and all
        raise StateUnavailable(
            f"{ENV_REDIS_URL} ({public_name(url) if '://' in url else 'not a URL'}) is not a "
            f"Redis URL redis-py can use; give redis://[:PASSWORD@]host:port/db, rediss://... "
            f"for TLS, or unix:///path/to/socket") from None


def reset() -> None:
    """Close every open store (tests; what a restart does)."""
    with _lock:
        for opened in _stores.values():
            opened.close()
        _stores.clear()
