"""Batched evaluation: every seed's episodes advance in lockstep through one jitted ``act``."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from fluxrl.envs import HostEnv


def eval_seed(seed: int, episode: int) -> int:
    """Fixed reset seed of evaluation episode ``episode`` for training seed ``seed``: every
    evaluation sees the same start states, so curves are comparable and resume needs no state."""
    return 1_000_003 + 1000 * seed + episode


def evaluate(act: Callable[[np.ndarray], np.ndarray], envs: list[list[HostEnv]],
             seeds: list[int], frames: list | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run one episode in each ``envs[s][e]`` with ``act(obs[S, E, d]) -> actions[S, E, a]``.

    Returns returns and lengths shaped ``[S, E]``. With ``frames`` (a list), appends the RGB frames
    of the first environment of every seed, for videos.
    """
    S, E = len(envs), len(envs[0])
    obs = np.stack([np.stack([env.reset(seed=eval_seed(seeds[i], j))
                              for j, env in enumerate(row)]) for i, row in enumerate(envs)])
    done = np.zeros((S, E), bool)
    ret = np.zeros((S, E))
    length = np.zeros((S, E), np.int64)
    while not done.all():
        if frames is not None:
            frames.append([envs[i][0].render() for i in range(S)])
        actions = np.asarray(act(obs))
        for i in range(S):
            for j in range(E):
                if done[i, j]:
                    continue
                o, r, term, trunc = envs[i][j].step(actions[i, j])
                obs[i, j] = o
                ret[i, j] += r
                length[i, j] += 1
                done[i, j] = term or trunc
    return ret, length
