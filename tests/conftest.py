"""Shared test setup: CPU JAX, quiet logs, and a persistent compilation cache.

Many tests build the same small programs (SAC on Pendulum, PPO on PointReach) in fresh jitted
closures, which JAX's in-memory cache cannot share; the persistent cache (keyed by the program,
the jax version and the flags) lets every such compile after the first load the executable. It
also reaches the ``fluxrl`` subprocesses some tests start (they inherit the environment). On a
2-core CPU it cut tests/test_harness.py + tests/test_cli_errors.py from 194 s to 148 s."""

import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"fluxrl-test-jax-cache-{os.getuid()}"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
