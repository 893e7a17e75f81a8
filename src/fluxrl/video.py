"""Writing mp4 videos of rendered frames without JAX's ``os.fork()`` warning.

``imageio.mimsave`` starts ffmpeg with ``preexec_fn=os.setpgrp`` (imageio-ffmpeg keeps Ctrl-C
away from ffmpeg that way). A ``preexec_fn`` makes CPython fork through ``PyOS_BeforeFork``, which
runs the Python-level ``os.register_at_fork`` handlers, and JAX registers one that warns
"os.fork() was called ... JAX is multithreaded, so this will likely lead to a deadlock". The
warning is right in general: Python code run between fork and exec in a multithreaded process can
deadlock. :func:`write_mp4` therefore starts the same ffmpeg binary with
``subprocess.Popen(process_group=0)``: the child is put in its own process group by C code between
fork and exec, no Python runs in the child, no at-fork handler is called, nothing is filtered, and
Ctrl-C still does not reach ffmpeg (an interrupted write kills it and re-raises).
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import numpy as np

#: Constant rate factor of the H.264 encoding (imageio's default quality 5 gives 25).
CRF = 23


def _rgb(frame: np.ndarray) -> np.ndarray:
    """``frame`` as contiguous uint8 RGB ``[H, W, 3]`` (grey ``[H, W]`` and RGBA accepted)."""
    f = np.asarray(frame)
    if f.ndim == 2:
        f = np.repeat(f[..., None], 3, axis=-1)
    if f.ndim != 3 or f.shape[-1] not in (3, 4):
        raise ValueError(f"a frame must be [H, W], [H, W, 3] or [H, W, 4], got shape {f.shape}")
    if f.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (as rendered), got {f.dtype}")
    return np.ascontiguousarray(f[..., :3])


def write_mp4(path: str | Path, frames: Iterable[np.ndarray], fps: float = 50) -> Path:
    """Write ``frames`` (uint8 RGB ``[H, W, 3]``, all of one size) to an H.264 mp4 at ``path``.

    Plays in browsers and common players (yuv420p; odd sizes are padded by one black pixel row
    or column). Uses imageio-ffmpeg's bundled ffmpeg without forking through Python, so JAX's
    ``os.fork()`` RuntimeWarning is not triggered (see the module docstring). Raises
    ``ValueError`` for no frames or frames of mixed sizes and ``RuntimeError`` with ffmpeg's
    message if ffmpeg fails. Returns ``path``."""
    import imageio_ffmpeg

    path = Path(path)
    it = iter(frames)
    try:
        first = _rgb(next(it))
    except StopIteration:
        raise ValueError("write_mp4 needs at least one frame") from None
    h, w = first.shape[:2]
    rate = Fraction(fps).limit_denominator(1001)
    cmd = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
           "-f", "rawvideo", "-vcodec", "rawvideo", "-s", f"{w}x{h}", "-pix_fmt", "rgb24",
           "-r", str(rate), "-i", "-", "-an",
           "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
           "-vcodec", "libx264", "-pix_fmt", "yuv420p", "-crf", str(CRF),
           "-movflags", "+faststart", str(path)]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=err, process_group=0)
        try:
            try:
                frame = first
                while True:
                    if frame.shape != first.shape:
                        raise ValueError(f"frames differ in size: {frame.shape[:2]} after "
                                         f"{first.shape[:2]}")
                    proc.stdin.write(frame.tobytes())
                    nxt = next(it, None)
                    if nxt is None:
                        break
                    frame = _rgb(nxt)
            except BrokenPipeError:
                pass  # ffmpeg stopped early; its exit code and message are reported below
            finally:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            code = proc.wait(timeout=120)
        except BaseException:  # bad frame, Ctrl-C, hung ffmpeg: no half-written video is left
            proc.kill()
            proc.wait()
            path.unlink(missing_ok=True)
            raise
        if code != 0:
            err.seek(0)
            msg = err.read().decode(errors="replace").strip().splitlines()
            path.unlink(missing_ok=True)
            raise RuntimeError(f"ffmpeg failed writing {path} (exit {code}): "
                               + (msg[-1] if msg else "no message"))
    return path
