"""fluxrl: reinforcement learning with diffusion and flow-matching policies, in JAX."""

import os as _os

# Headless rendering by default (videos of evaluation episodes); users may override.
_os.environ.setdefault("MUJOCO_GL", "egl")

import jax as _jax  # noqa: E402

# float32 matmuls everywhere: no silent TF32 / bf16 passes on GPUs (design.md section 3).
_jax.config.update("jax_default_matmul_precision", "float32")

__version__ = "0.1.0"
