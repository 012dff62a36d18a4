"""The templates' sample images, put where their Load Image nodes look for them.

Every template's Load Image asks for `sample_portrait.png` or `sample_duckling.png` in
ComfyUI's input folder. When the pack loads inside ComfyUI, the samples shipped in
example_workflows/input/ are copied there, so a template runs as loaded.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

log = logging.getLogger("comfyui_fal_edit")

SAMPLES = Path(__file__).resolve().parents[1] / "example_workflows" / "input"


def comfyui_input_directory() -> Path:
    import folder_paths  # type: ignore[import-not-found]
    return Path(folder_paths.get_input_directory())


def copy_samples_to_input(input_dir: Path | None = None) -> list[str]:
    """Copy each sample into ComfyUI's input folder unless a file of that name is there.

    Never overwrites (the user's own file of that name wins) and never raises: a failure is
    one log line, and the templates then ask for an image. Local file copies only, ~1 MB.
    Returns the names copied.
    """
    copied: list[str] = []
    try:
        target_dir = input_dir if input_dir is not None else comfyui_input_directory()
        target_dir.mkdir(parents=True, exist_ok=True)
        for sample in sorted(SAMPLES.glob("*.png")):
            target = target_dir / sample.name
            if target.exists():
                continue
            try:
                # "x": exclusive create, so a file that appeared meanwhile is not overwritten.
                with sample.open("rb") as source, open(target, "xb") as copy:
                    shutil.copyfileobj(source, copy)
            except FileExistsError:
                continue
            except BaseException:
                target.unlink(missing_ok=True)   # no half-written sample left behind
                raise
            copied.append(sample.name)
    except Exception as exc:
        log.warning("fal templates: could not copy the sample images into ComfyUI's input "
                    "folder (%s: %s); the templates' Load Image nodes will ask for an image",
                    type(exc).__name__, exc)
        return copied
    if copied:
        log.info("fal templates: copied %s into ComfyUI's input folder", ", ".join(copied))
    return copied
