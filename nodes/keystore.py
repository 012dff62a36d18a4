"""Named fal keys, kept server-side in one file only the ComfyUI user can read.

Workflow JSON, PNG metadata and prompt history only ever carry a key's *name*.
This module imports nothing from the pack so it also runs as a script:

    python custom_nodes/<this pack>/nodes/keystore.py add NAME     (key read from stdin)
    python custom_nodes/<this pack>/nodes/keystore.py list | delete NAME | path
    python custom_nodes/<this pack>/nodes/keystore.py settings [...]   (server_settings.py)
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl   # POSIX; elsewhere an O_EXCL lock file does the same job
except ImportError:
    fcntl = None  # type: ignore[assignment]

ENV_KEY = "FAL_KEY"
# Overrides where the key file lives (tests; unusual installs).
ENV_KEY_FILE = "COMFYUI_FAL_KEYS_FILE"
KEY_DIR_NAME = "comfyui-fal-edit"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.\-]{0,39}$")
_KEY = re.compile(r"^[\x21-\x7e]{8,256}$")


class KeyStoreError(ValueError):
    pass


def key_file() -> Path:
    override = os.environ.get(ENV_KEY_FILE)
    if override:
        return Path(override)
    return user_directory() / KEY_DIR_NAME / "keys.json"


def user_directory() -> Path:
    """ComfyUI's user directory (where it keeps per-user settings).

    Inside ComfyUI we ask it; as a script we are in ComfyUI/custom_nodes/<pack>/nodes.
    The file sits beside the per-user folders, not inside one, so ComfyUI's
    /userdata routes never serve it.
    """
    try:
        import folder_paths  # type: ignore[import-not-found]
        return Path(folder_paths.get_user_directory())
    except ImportError:
        return Path(__file__).resolve().parents[3] / "user"


def hint(key: str) -> str:
    """What may be shown of a key: its last four characters."""
    return "…" + key[-4:] if len(key) >= 12 else "…"


def check_name(name: str) -> str:
    name = (name or "").strip()
    if not _NAME.fullmatch(name):
        raise KeyStoreError("a key name is 1 to 40 letters, digits, spaces, '_', '.' or '-', "
                            "starting with a letter or digit")
    return name


def check_key(key: str) -> str:
    key = (key or "").strip()
    if not key:
        raise KeyStoreError("the key is empty; paste the key from fal.ai/dashboard/keys")
    if not _KEY.fullmatch(key):
        raise KeyStoreError("that does not look like a fal key (8 to 256 printable characters "
                            "without spaces); paste it again from fal.ai/dashboard/keys")
    return key


def _read(path: Path) -> dict[str, str]:
    data = read_json(path)
    if data is None:
        return {}
    keys = data.get("keys") if isinstance(data, dict) else data
    if not isinstance(keys, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                             for k, v in keys.items()):
        raise KeyStoreError(f"the key file {path} does not hold named keys (found "
                            f"{type(keys).__name__} where they belong); nothing was changed, "
                            f"move the file away and add the keys again")
    return dict(keys)


def read_json(path: Path) -> Any:
    """The file's JSON, or None when it does not exist. KeyStoreError when unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise KeyStoreError(f"the file {path} cannot be read ({type(exc).__name__}); "
                            f"nothing was changed, move it away and try again") from None


def private_dir(directory: Path) -> Path:
    """Create `directory`, and every missing folder above it, readable by this user only
    (0700) from the start (mkdir -p would make the parents 0755)."""
    missing = []
    folder = directory
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    try:
        os.chmod(directory, 0o700)
    except OSError:
        pass
    return directory


@contextmanager
def locked(path: Path, timeout_s: float = 10.0) -> Iterator[None]:
    """Hold a lock across a read-modify-write of `path`, between threads and processes
    alike: flock on its folder where there is flock (nothing left behind), else a
    sibling lock file created with O_EXCL."""
    private_dir(path.parent)
    lock_path = path.with_name(path.name + ".lock")
    if fcntl is not None:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            break
        except FileExistsError:
            try:   # a lock left behind by a crashed process
                if time.time() - lock_path.stat().st_mtime > 60:
                    lock_path.unlink()
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise KeyStoreError(f"{path} is locked by another process; try again") from None
            time.sleep(0.02)
    try:
        yield
    finally:
        os.close(fd)
        try:
            lock_path.unlink()
        except OSError:
            pass


def _write(path: Path, keys: dict[str, str]) -> None:
    write_private_json(path, {"keys": keys}, prefix=".keys-")


def write_private_json(path: Path, data: Any, prefix: str = ".tmp-") -> None:
    """Write JSON the way write_private_bytes writes bytes."""
    write_private_bytes(path, json.dumps(data, indent=1, sort_keys=True).encode("utf-8"),
                        prefix)


def write_private_bytes(path: Path, data: bytes, prefix: str = ".tmp-") -> None:
    """Write through a 0600 temp file of its own and a rename: never readable by others,
    not even for a moment; a crash never leaves half a file; two writers never share a
    temp file."""
    private_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=prefix, suffix=".tmp")
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def names() -> list[str]:
    """Saved key names; [] with one warning when the file is unusable (the fal Key node's
    list must still load)."""
    try:
        return sorted(_read(key_file()))
    except KeyStoreError as exc:
        import logging
        logging.getLogger("comfyui_fal_edit").warning("fal keys: %s", exc)
        return []


def get(name: str) -> str | None:
    return _read(key_file()).get(name)


def listing() -> list[dict[str, str]]:
    return [{"name": n, "hint": hint(k)} for n, k in sorted(_read(key_file()).items())]


def add(name: str, key: str) -> None:
    name, key = check_name(name), check_key(key)
    path = key_file()
    with locked(path):
        keys = _read(path)
        keys[name] = key
        _write(path, keys)


def delete(name: str) -> bool:
    path = key_file()
    with locked(path):
        keys = _read(path)
        if name not in keys:
            return False
        del keys[name]
        _write(path, keys)
    return True


def _server_settings_module():
    """server_settings.py beside this file, for the `settings` command. It uses relative
    imports, so it is loaded inside a package of its own (the pack's own package would
    import its node classes, torch included)."""
    import importlib
    import types
    name = "_comfyui_fal_edit_nodes"
    if name not in sys.modules:
        package = types.ModuleType(name)
        package.__path__ = [str(Path(__file__).resolve().parent)]
        sys.modules[name] = package
    return importlib.import_module(name + ".server_settings")


def main(argv: list[str]) -> int:
    usage = ("usage: keystore.py add NAME | list | delete NAME | path | settings [...]   "
             "(add reads the key from stdin)")
    if argv and argv[0] == "settings":
        return _server_settings_module().main(argv[1:])
    if not argv or argv[0] not in ("add", "list", "delete", "path"):
        print(usage, file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        if command == "path":
            print(key_file())
        elif command == "list":
            for row in listing():
                print(f"{row['name']}\t{row['hint']}")
        elif command == "add" and len(rest) == 1:
            if sys.stdin.isatty():
                import getpass
                key = getpass.getpass(f"fal key for '{rest[0]}' (input hidden): ")
            else:
                key = sys.stdin.readline()
            add(rest[0], key)
            print(f"saved key '{check_name(rest[0])}' ({hint(key.strip())}) in {key_file()}")
        elif command == "delete" and len(rest) == 1:
            print("deleted" if delete(rest[0]) else f"no key named '{rest[0]}'")
        else:
            print(usage, file=sys.stderr)
            return 2
    except KeyStoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
