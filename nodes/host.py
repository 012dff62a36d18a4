"""The few things the runtime needs from ComfyUI, reached lazily.

The pack imports and runs without ComfyUI (tests, the demo, the benchmark); there
the interrupt flag is never set and status text goes to an optional callback.
"""

from __future__ import annotations

import logging
from typing import Callable

log = logging.getLogger("comfyui_fal_edit")


class Interrupted(Exception):
    """Raised outside ComfyUI where comfy's own interrupt exception does not exist."""


_MISSING = object()
_modules: dict[str, object] = {}


def _comfy_module(name: str):
    """ComfyUI's module `name`, or None outside ComfyUI. Looked up once: a failed import is
    not cached by Python, and each retry scans sys.path (64 calls of a list input, each
    watching the interrupt flag 4 times a second, spent a second of CPU on it)."""
    found = _modules.get(name, _MISSING)
    if found is _MISSING:
        import importlib
        try:
            found = importlib.import_module(name)
        except ImportError:
            found = None
        _modules[name] = found
    return found


class ComfyHost:
    def __init__(self) -> None:
        # Outside ComfyUI, tests and the demo can watch status text here.
        self.status_listener: Callable[[str | None, str], None] | None = None
        # Outside ComfyUI, tests and the benchmark raise the interrupt flag here.
        self.interrupt_requested = False
        # Outside ComfyUI, tests and the demo say which prompt is running.
        self.current_prompt_id: str | None = None

    def interrupted(self) -> bool:
        mm = _comfy_module("comfy.model_management")
        if mm is None:
            return self.interrupt_requested
        return bool(mm.processing_interrupted()) or self.interrupt_requested

    def raise_interrupt(self) -> None:
        """Raise ComfyUI's own interrupt (it also clears the flag)."""
        self.interrupt_requested = False
        mm = _comfy_module("comfy.model_management")
        if mm is None:
            raise Interrupted("interrupted by the user")
        mm.throw_exception_if_processing_interrupted()
        raise mm.InterruptProcessingException()

    def show_status(self, node_id: str | None, text: str) -> None:
        if self.status_listener is not None:
            self.status_listener(node_id, text)
        if node_id is None:
            return
        server = _comfy_module("server")
        if server is None:
            return
        try:
            server.PromptServer.instance.send_progress_text(text, node_id)
        except Exception:  # status text is a nicety; never fail a run over it
            log.debug("could not send progress text", exc_info=True)

    def prompt_id(self) -> str | None:
        """The prompt ComfyUI is running now (for the per-prompt spend guard)."""
        if self.current_prompt_id is not None:
            return self.current_prompt_id
        server = _comfy_module("server")
        if server is None:
            return None
        return getattr(server.PromptServer.instance, "last_prompt_id", None)

    def progress(self, node_id: str | None, done: int, total: int) -> None:
        """Drive ComfyUI's progress bar on the node."""
        utils = _comfy_module("comfy.utils")
        if utils is None:
            return
        try:
            utils.ProgressBar(total, node_id=node_id).update_absolute(done, total)
        except Exception:
            log.debug("could not update the progress bar", exc_info=True)


host = ComfyHost()
