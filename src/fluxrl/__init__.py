"""fluxrl: reinforcement learning with diffusion and flow-matching policies, in JAX.

Importing :mod:`fluxrl` does not import JAX (so ``fluxrl --help`` is fast), yet every JAX
computation in the process runs with float32 matmuls: see :func:`_float32_matmuls`.
"""

import os as _os
import sys as _sys

# Headless rendering by default (videos of evaluation episodes); users may override.
_os.environ.setdefault("MUJOCO_GL", "egl")


def _float32_matmuls() -> None:
    """float32 matmuls everywhere: no silent TF32 / bf16 passes on GPUs (design.md section 3).

    JAX reads ``JAX_DEFAULT_MATMUL_PRECISION`` once, when ``jax`` is first imported, so setting
    the variable here covers every later import of JAX in this process (by any fluxrl module or
    by the user) without importing JAX now. If JAX was imported before fluxrl, the setting is
    updated directly. Every submodule of fluxrl imports this package first, so no fluxrl code
    can reach JAX without passing here."""
    _os.environ["JAX_DEFAULT_MATMUL_PRECISION"] = "float32"
    jax = _sys.modules.get("jax")
    if jax is not None and hasattr(jax, "config"):
        jax.config.update("jax_default_matmul_precision", "float32")


_float32_matmuls()

__version__ = "0.1.0"
