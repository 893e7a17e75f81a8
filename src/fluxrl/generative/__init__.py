"""The generative-model axis: how an action is produced from noise, written once for every agent.

``make_model(name, **options)`` builds one of :data:`MODELS`; all share the interface of
:class:`~fluxrl.generative.base.GenerativeModel` (``q_sample``, ``loss`` with per-sample weights,
a ``lax.scan`` ``sample``, score / noise / x0 / velocity conversions). The network is a
:class:`~fluxrl.nets.denoiser.Denoiser`.

| name | model | net predicts | samplers (default first) |
|---|---|---|---|
| ``vp-cosine``, ``vp-linear`` | continuous-time VP diffusion | noise | ddpm, ddim |
| ``ddpm``, ``ddpm-linear`` | discrete DDPM, 20 timesteps, cosine / linear | noise | ddpm, ddim |
| ``flow`` | flow matching, linear path (rectified flow) | velocity | euler, heun |
| ``edm`` | EDM (Karras et al. 2022) | denoised x0 | heun, euler |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields
from functools import partial
from typing import Any

from fluxrl.errors import FluxError, close_matches
from fluxrl.generative import conversions
from fluxrl.generative.base import GenerativeModel, Network, as_network
from fluxrl.generative.diffusion import DDPM, VPDiffusion
from fluxrl.generative.edm import EDM
from fluxrl.generative.flow import FlowMatching

MODELS: dict[str, Callable[..., GenerativeModel]] = {
    "vp-cosine": partial(VPDiffusion, schedule="cosine"),
    "vp-linear": partial(VPDiffusion, schedule="linear"),
    "ddpm": partial(DDPM, schedule="cosine"),
    "ddpm-linear": partial(DDPM, schedule="linear"),
    "flow": FlowMatching,
    "edm": EDM,
}


def model_class(name: str) -> type[GenerativeModel]:
    """The class behind a registered model name (``"ddpm"`` -> :class:`DDPM`)."""
    factory = MODELS[name]
    return factory.func if isinstance(factory, partial) else factory


def models_predicting(prediction: str) -> tuple[str, ...]:
    """Registered models whose network predicts ``prediction`` (``"eps"``, ``"v"``, ...)."""
    return tuple(n for n in MODELS if model_class(n).prediction == prediction)


def make_model(name: str, **options: Any) -> GenerativeModel:
    """Build a registered model; unknown names and options are a :class:`FluxError`."""
    if name not in MODELS:
        raise FluxError(f"unknown generative model {name!r}; {close_matches(name, MODELS)}")
    known = [f.name for f in fields(model_class(name))]
    for key in options:
        if key not in known:
            raise FluxError(f"unknown option {key!r} for generative model {name!r}; "
                            f"{close_matches(key, known)}")
    return MODELS[name](**options)


__all__ = ["DDPM", "EDM", "MODELS", "FlowMatching", "GenerativeModel", "Network", "VPDiffusion",
           "as_network", "conversions", "make_model", "model_class", "models_predicting"]
