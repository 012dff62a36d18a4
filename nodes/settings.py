"""What the fal Key and fal Settings nodes hand to every fal node."""

from __future__ import annotations

import os
from dataclasses import dataclass

from . import keystore

NSFW_POLICIES = ("error", "keep flagged", "drop flagged")
UPLOAD_FORMATS = ("png", "jpeg")
CACHE_MODES = ("use", "refresh", "off")


@dataclass(frozen=True)
class FalKeyRef:
    """The key node's output: a key's *name*; the key itself stays in the key store."""

    name: str | None = None      # None: the FAL_KEY environment variable

    @property
    def label(self) -> str:
        return f"named '{self.name}'" if self.name else "from the FAL_KEY environment variable"


@dataclass(frozen=True)
class FalSettings:
    key: FalKeyRef = FalKeyRef()
    # fal requests in flight at once, for the whole process (see concurrency.py). 8 makes a
    # batch of 8 one round; fal queues what passes an account's limit on its side.
    concurrency: int = 8
    timeout_s: float = 600.0
    nsfw_policy: str = "error"
    upload_format: str = "png"
    inline_results: bool = False      # fal's sync_mode: results come back as data URIs
    base_url: str = ""                  # used only if the owner allowed it (egress.py)
    cache: str = "use"
    max_usd_per_prompt: float = 0.0     # 0: no limit
    max_usd_per_session: float = 0.0    # 0: no limit


DEFAULT_SETTINGS = FalSettings()


class MissingKey(Exception):
    pass


def resolve_key(ref: FalKeyRef) -> str:
    """The key itself, or MissingKey with the fix in its message."""
    if ref.name:
        try:
            key = keystore.get(ref.name)
        except keystore.KeyStoreError as exc:
            raise MissingKey(str(exc)) from None
        if not key:
            raise MissingKey(f"no fal key named '{ref.name}' is saved; add it in Settings → fal "
                             f"(or with `python nodes/keystore.py add {ref.name}`) or pick "
                             f"another key in the fal Key node")
        return key
    key = os.environ.get(keystore.ENV_KEY, "").strip()
    if not key:
        raise MissingKey("no fal key is set; save one in Settings → fal and pick it in a fal Key "
                         "node connected through fal Settings, or set the FAL_KEY environment "
                         "variable before starting ComfyUI")
    return key
