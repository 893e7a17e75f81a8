"""Checkpoints that survive what happens to real runs, with nothing that can run code when read.

On disk, under ``run_dir/checkpoints``::

    <frame>/                  one checkpoint per saved frame (the newest KEEP intact ones are kept)
        device/               the device state (a pytree of arrays), orbax StandardCheckpointer
        host.json             the host state's structure: dicts, lists, tuples, ints (any size),
                              floats, bools, str and None, with each array replaced by a reference
        host.npz              those arrays, read back with ``np.load(..., allow_pickle=False)``
        MANIFEST.json         written last: every other file of the checkpoint with its size and
                              sha256, so truncation and corruption are detected before loading
    LATEST                    the frame of the newest save: a hint only, the listing is the truth
    bad/<frame>-<reason>/     checkpoints found damaged, moved aside (never deleted)
    .partial-<frame>/         a save in progress; renamed to ``<frame>`` once its manifest exists

A save writes everything into ``.partial-<frame>``, fsyncs it, writes the manifest, renames the
directory to ``<frame>`` and only then replaces ``LATEST``; so a numbered directory is complete
from the moment it appears, and a reader (``fluxrl eval`` during training) never sees half a save.

Reading: :func:`open_latest` walks the numbered directories newest first, verifies each against its
manifest, moves every bad one aside with one line of explanation and returns the newest intact
:class:`Checkpoint`; :meth:`Checkpoint.device` restores the device state into the shapes of a
target and turns a mismatch into one :class:`~fluxrl.errors.FluxError` line. :func:`restore` and
:func:`latest_step` keep the older call pattern working on top of these.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from fluxrl.errors import FluxError

KEEP = 2  #: intact checkpoints kept per run
FORMAT = 1  #: version of the manifest and host-state format
MANIFEST = "MANIFEST.json"
HOST_JSON = "host.json"
HOST_NPZ = "host.npz"
DEVICE = "device"
PARTIAL = ".partial-"
BAD = "bad"


def ckpt_root(run_dir: Path) -> Path:
    """Where a run's checkpoints live."""
    return Path(run_dir) / "checkpoints"


def _stderr(msg: str) -> None:
    print(f"fluxrl: {msg}", file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0].strip() if text else ""
    line = line if len(line) <= 200 else line[:197] + "..."
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


def _frames(root: Path) -> list[int]:
    """The numbered checkpoint directories, oldest first."""
    if not root.is_dir():
        return []
    return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit() and p.is_dir())


# --- host state: json structure + npz arrays -------------------------------------------------

_PLAIN = "dicts, lists, tuples, numpy arrays, ints, floats, bools, str and None"


def encode_host(obj: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """Split ``obj`` into a JSON-able structure and the arrays it references.

    Plain JSON values stand for themselves and lists for lists; every JSON object is a tag:
    ``{"dict": {...}}``, ``{"tuple": [...]}``, ``{"array": "a0"}``, ``{"scalar": "a1"}`` (a numpy
    scalar), ``{"int": "0x..."}`` (ints of 64 bits or more) or ``{"float": "nan"}`` (non-finite).
    Raises :class:`TypeError` naming the offending place for anything else (or object arrays).
    """
    arrays: dict[str, np.ndarray] = {}

    def array(x: np.ndarray, where: str) -> str:
        if x.dtype.hasobject:
            raise TypeError(f"host state at {where} is an object array; checkpoints hold only "
                            f"{_PLAIN} (no pickle)")
        key = f"a{len(arrays)}"
        arrays[key] = x
        return key

    def enc(x: Any, where: str) -> Any:
        if isinstance(x, np.generic):  # before int/float: np.float64 is a float subclass
            return {"scalar": array(np.asarray(x), where)}
        if x is None or isinstance(x, bool | str):
            return str(x) if isinstance(x, str) else x
        if isinstance(x, int):
            return int(x) if abs(x) < 2**63 else {"int": hex(x)}
        if isinstance(x, float):
            return float(x) if math.isfinite(x) else {"float": repr(float(x))}
        if isinstance(x, np.ndarray):
            return {"array": array(np.array(x, copy=True), where)}
        if isinstance(x, jax.Array):
            return {"array": array(np.asarray(x), where)}
        if isinstance(x, dict):
            for k in x:
                if not isinstance(k, str):
                    raise TypeError(f"host state at {where} has a {type(k).__name__} key {k!r}; "
                                    "checkpointed dicts need str keys")
            return {"dict": {k: enc(v, f"{where}[{k!r}]") for k, v in x.items()}}
        if type(x) is tuple:
            return {"tuple": [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]}
        if type(x) is list:
            return [enc(v, f"{where}[{i}]") for i, v in enumerate(x)]
        raise TypeError(f"host state at {where} is a {type(x).__module__}.{type(x).__qualname__}; "
                        f"checkpoints hold only {_PLAIN} (no pickle)")

    return enc(obj, "host"), arrays


def decode_host(tree: Any, arrays: dict[str, np.ndarray]) -> Any:
    """Rebuild what :func:`encode_host` split; raises :class:`ValueError` if it is malformed."""

    def dec(x: Any) -> Any:
        if x is None or isinstance(x, bool | int | float | str):
            return x
        if isinstance(x, list):
            return [dec(v) for v in x]
        if isinstance(x, dict) and len(x) == 1:
            (tag, v), = x.items()
            if tag == "dict" and isinstance(v, dict):
                return {k: dec(e) for k, e in v.items()}
            if tag == "tuple" and isinstance(v, list):
                return tuple(dec(e) for e in v)
            if tag in ("array", "scalar") and isinstance(v, str):
                if v not in arrays:
                    raise ValueError(f"{HOST_NPZ} has no array {v!r}")
                a = arrays[v]
                return a[()] if tag == "scalar" else a
            if tag == "int" and isinstance(v, str):
                return int(v, 16)
            if tag == "float" and v in ("nan", "inf", "-inf"):
                return float(v)
        raise ValueError(f"unexpected entry {str(x)[:60]!r} in {HOST_JSON}")

    return dec(tree)


def _fsync_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    with open(path, mode) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())


def write_host(directory: Path, host: Any) -> None:
    """Write ``host`` as ``host.json`` + ``host.npz`` into ``directory``, fsynced."""
    _write_encoded(Path(directory), *encode_host(host))


def _write_encoded(directory: Path, tree: Any, arrays: dict[str, np.ndarray]) -> None:
    text = json.dumps({"format": FORMAT, "host": tree}, allow_nan=False)
    _fsync_write(directory / HOST_JSON, lambda f: f.write(text), "w")
    _fsync_write(directory / HOST_NPZ, lambda f: np.savez(f, **arrays))


def read_host(directory: Path) -> Any:
    """Read what :func:`write_host` wrote (no pickle: ``allow_pickle=False``).

    Raises :class:`ValueError` (or :class:`OSError`) when the files are unreadable."""
    directory = Path(directory)
    doc = json.loads((directory / HOST_JSON).read_text())
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or "host" not in doc:
        raise ValueError(f"{HOST_JSON} is not a fluxrl host state of format {FORMAT}")
    with np.load(directory / HOST_NPZ, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    return decode_host(doc["host"], arrays)


# --- saving ------------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path, sync: bool = False) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
        if sync:
            os.fsync(f.fileno())
    return h.hexdigest()


def _inventory(directory: Path) -> dict[str, dict[str, Any]]:
    """Every file under ``directory`` (relative POSIX path -> size, sha256), fsyncing as it goes."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(directory):
        dirnames.sort()
        for name in sorted(filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(directory).as_posix()
            if rel == MANIFEST:
                continue
            files[rel] = {"size": p.stat().st_size, "sha256": _sha256(p, sync=True)}
        _fsync_dir(Path(dirpath))
    return files


def save(run_dir: Path, step: int, device_state: Any, host_state: dict) -> Path:
    """Write checkpoint ``step``, point ``LATEST`` at it and keep the newest :data:`KEEP` intact ones.

    ``device_state`` is a pytree of arrays (orbax); ``host_state`` is plain data (see
    :func:`encode_host`; anything else raises :class:`TypeError` before a file is written).
    Returns the checkpoint's directory."""
    step = int(step)
    root = ckpt_root(run_dir).absolute()
    root.mkdir(parents=True, exist_ok=True)
    host = encode_host(host_state)  # fails on unsupported host data before anything is written
    for stale in root.glob(PARTIAL + "*"):  # left by a save that was killed
        shutil.rmtree(stale, ignore_errors=True)
    stage = root / f"{PARTIAL}{step}"
    stage.mkdir()
    ckptr = ocp.StandardCheckpointer()
    try:
        ckptr.save(stage / DEVICE, jax.device_get(device_state))
        ckptr.wait_until_finished()
    finally:
        ckptr.close()
    _write_encoded(stage, *host)
    manifest = {"format": FORMAT, "frame": step, "files": _inventory(stage)}
    _fsync_write(stage / MANIFEST, lambda f: f.write(json.dumps(manifest, indent=1)), "w")
    _fsync_dir(stage)
    final = root / str(step)
    if final.exists():  # saving the same frame again replaces it
        shutil.rmtree(final)
    os.rename(stage, final)
    _fsync_dir(root)
    tmp = root / "LATEST.tmp"
    _fsync_write(tmp, lambda f: f.write(str(step)), "w")
    os.replace(tmp, root / "LATEST")
    _fsync_dir(root)
    intact = [f for f in _frames(root) if _cheap_ok(root / str(f))]
    for old in intact[:-KEEP]:
        shutil.rmtree(root / str(old), ignore_errors=True)
    return final


# --- verifying and reading ---------------------------------------------------------------------


def _problem(path: Path, hashes: bool = True) -> tuple[str, str] | None:
    """Why the checkpoint in ``path`` cannot be used, as ``(short reason, detail)``, or None.

    With ``hashes=False`` only the manifest and the file sizes are checked (cheap)."""
    mf = path / MANIFEST
    if not mf.is_file():
        if (path / "host.pkl").exists():
            return "old-format", "host.pkl, no manifest"
        return "incomplete", f"it has no {MANIFEST}, so its save was interrupted"
    try:
        manifest = json.loads(mf.read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or not all(
                isinstance(v, dict) and isinstance(v.get("size"), int)
                and isinstance(v.get("sha256"), str) for v in files.values()):
            raise ValueError("bad file table")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return "incomplete", f"its {MANIFEST} is unreadable ({_first_line(exc)})"
    for required in (HOST_JSON, HOST_NPZ):
        if required not in files:
            return "corrupt", f"its manifest lists no {required}"
    if not any(rel.startswith(DEVICE + "/") for rel in files):
        return "corrupt", f"its manifest lists no {DEVICE}/ files"
    for rel, entry in files.items():
        if rel.startswith("/") or ".." in rel.split("/"):
            return "corrupt", f"its manifest names a file outside it ({rel})"
        p = path / rel
        if not p.is_file():
            return "corrupt", f"{rel} is missing"
        size = p.stat().st_size
        if size != entry["size"]:
            return "corrupt", f"{rel} is {size} bytes, the manifest says {entry['size']}"
    if hashes:
        for rel, entry in files.items():
            if _sha256(path / rel) != entry["sha256"]:
                return "corrupt", f"{rel} does not match its sha256 in the manifest"
    return None


def _cheap_ok(path: Path) -> bool:
    try:
        return _problem(path, hashes=False) is None
    except OSError:
        return False


def _describe(frame: int, reason: str, detail: str) -> str:
    if reason == "old-format":
        return (f"checkpoint {frame} was written by an older fluxrl ({detail}) and cannot be read "
                "safely, so it is not loaded")
    return f"checkpoint {frame} is {reason} ({detail})"


@dataclass(frozen=True)
class Checkpoint:
    """One verified checkpoint: its frame, directory and host state; the device state on demand."""

    frame: int  #: the frame (environment step) it was saved at
    path: Path  #: its directory, ``run_dir/checkpoints/<frame>``
    host: dict  #: the host state given to :func:`save`, already loaded

    def device(self, target: Any) -> Any:
        """Restore the device state into the structure, shapes and dtypes of ``target``.

        0-d leaves come back as numpy arrays. A leaf missing on either side or of another shape
        raises a one-line :class:`FluxError` naming it; so does any other orbax read failure."""
        path = (self.path / DEVICE).absolute()
        ckptr = ocp.StandardCheckpointer()
        try:
            try:
                meta = ckptr.metadata(path).item_metadata
                meta = getattr(meta, "tree", meta)
                stored = {_leaf_name(p): getattr(m, "shape", None)
                          for p, m in jax.tree_util.tree_flatten_with_path(meta)[0]}
            except Exception as exc:  # noqa: BLE001 - any orbax failure becomes one line
                raise FluxError(f"checkpoint {self.frame} in {self.path} cannot be read: "
                                f"{_first_line(exc)}") from None
            if not stored:
                raise FluxError(f"checkpoint {self.frame} in {self.path} cannot be read: orbax "
                                f"finds no device state metadata in {DEVICE}/")
            self._check_fits(stored, target)
            abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, target)
            try:
                state = ckptr.restore(path, abstract)
            except Exception as exc:  # noqa: BLE001
                raise FluxError(f"checkpoint {self.frame} in {self.path} cannot be read: "
                                f"{_first_line(exc)}") from None
        finally:
            ckptr.close()
        return jax.tree.map(lambda x: np.asarray(x) if np.ndim(x) == 0 else x, state)

    def _check_fits(self, stored: dict[str, tuple | None], target: Any) -> None:
        wanted = {_leaf_name(p): tuple(np.shape(x))
                  for p, x in jax.tree_util.tree_flatten_with_path(target)[0]}
        problems = []
        for name, shape in wanted.items():
            if name not in stored:
                problems.append(f"it has no leaf {name} (this run expects shape {shape})")
            elif stored[name] is not None and tuple(stored[name]) != shape:
                problems.append(f"leaf {name} has shape {tuple(stored[name])} in the checkpoint "
                                f"but {shape} in this run")
        problems += [f"it has a leaf {name} that this run does not"
                     for name in stored if name not in wanted]
        if problems:
            more = f" (and {len(problems) - 1} more differences)" if len(problems) > 1 else ""
            raise FluxError(f"checkpoint {self.frame} in {self.path} does not fit this run: "
                            f"{problems[0]}{more}; was it written with another config?")


def _leaf_name(path: tuple) -> str:
    parts = []
    for k in path:
        for attr in ("key", "name", "idx"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
        else:
            parts.append(str(k))
    return ".".join(parts) or "<root>"


def _load(path: Path, frame: int) -> tuple[Checkpoint | None, tuple[str, str] | None]:
    try:
        problem = _problem(path)
    except OSError as exc:
        problem = ("corrupt", f"its files cannot be read ({_first_line(exc)})")
    if problem is not None:
        return None, problem
    try:
        host = read_host(path)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises
        return None, ("corrupt", f"its host state cannot be read ({_first_line(exc)})")
    return Checkpoint(frame, path, host), None


def _move_aside(root: Path, frame: int, reason: str) -> Path:
    bad = root / BAD
    bad.mkdir(exist_ok=True)
    dest = bad / f"{frame}-{reason}"
    n = 2
    while dest.exists():
        dest = bad / f"{frame}-{reason}-{n}"
        n += 1
    os.rename(root / str(frame), dest)
    return dest


def open_latest(run_dir: Path, log: Callable[[str], None] | None = None) -> Checkpoint | None:
    """The newest intact checkpoint of ``run_dir``, or None if there is none.

    Numbered directories are tried newest first (``LATEST`` is ignored: the listing is the
    truth). Each is verified against its manifest (sizes and sha256) and its host state is loaded;
    every bad one is moved to ``checkpoints/bad/<frame>-<reason>`` (never deleted) and reported in
    one line through ``log`` (default: stderr), e.g. ``checkpoint 4000 is corrupt (host.npz is 12
    bytes, the manifest says 5678); moved to runs/x/checkpoints/bad/4000-corrupt; falling back to
    checkpoint 2000``. Reasons: ``incomplete`` (no or unreadable manifest: an interrupted save),
    ``corrupt`` (a file missing, truncated or changed, or unreadable host state) and
    ``old-format`` (written by an older fluxrl with pickle; not loaded)."""
    log = _stderr if log is None else log
    root = ckpt_root(run_dir)
    found: Checkpoint | None = None
    bad: list[str] = []
    for frame in reversed(_frames(root)):
        path = root / str(frame)
        ck, problem = _load(path, frame)
        if ck is not None:
            found = ck
            break
        if not path.exists():  # removed by a concurrent save's clean-up
            continue
        reason, detail = problem
        try:
            where = f"moved to {_move_aside(root, frame, reason)}"
        except OSError as exc:
            where = f"it could not be moved aside ({_first_line(exc)}) and stays in {path}"
        bad.append(f"{_describe(frame, reason, detail)}; {where}")
    tail = (f"falling back to checkpoint {found.frame}" if found is not None
            else "no intact checkpoint is left")
    for line in bad:
        log(f"{line}; {tail}")
    if bad and found is not None:
        tmp = root / "LATEST.tmp"
        try:
            tmp.write_text(str(found.frame))
            os.replace(tmp, root / "LATEST")
        except OSError:
            pass
    return found


def open_checkpoint(run_dir: Path, frame: int) -> Checkpoint:
    """Checkpoint ``frame`` of ``run_dir``, verified; a one-line :class:`FluxError` if it is
    missing or bad (nothing is moved)."""
    path = ckpt_root(run_dir) / str(int(frame))
    if not path.is_dir():
        have = ", ".join(map(str, _frames(ckpt_root(run_dir)))) or "none"
        raise FluxError(f"{run_dir} has no checkpoint {frame} (it has: {have})")
    ck, problem = _load(path, int(frame))
    if ck is None:
        raise FluxError(f"{_describe(int(frame), *problem)}; it is in {path}")
    return ck


def latest_step(run_dir: Path) -> int | None:
    """The newest checkpoint that has a manifest, or None (cheap: no hashing, nothing moved)."""
    root = ckpt_root(run_dir)
    for frame in reversed(_frames(root)):
        if (root / str(frame) / MANIFEST).is_file():
            return frame
    return None


def restore(run_dir: Path, target: Any, step: int | None = None) -> tuple[Any, dict, int]:
    """Load checkpoint ``step`` (default: the newest intact one, see :func:`open_latest`) into
    the structure of ``target``; return ``(device_state, host_state, frame)``."""
    if step is None:
        ck = open_latest(run_dir)
        if ck is None:
            raise FluxError(f"{run_dir} holds no intact checkpoint to restore")
    else:
        ck = open_checkpoint(run_dir, step)
    return ck.device(target), ck.host, ck.frame
