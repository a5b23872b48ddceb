"""The RL example's world: an 11x11 toroidal grid MDP, its x-only POMDP, and the POMDP's restricted
policy from Fast Informed Bound alpha-vectors (Muneeb & Ohannessian, NeurIPS 2024, the RL example
"POMDP policies help learn MDP policies"; official code `uicdice/imm-reinforce`, read, not copied).

- State s = (y, x), flattened row-major as s = y * W + x (the official `alphas.h5` layout).
- Actions UP, DOWN, LEFT, RIGHT = 0..3; UP is y - 1, LEFT is x - 1; the grid wraps around (torus).
- Reward of the state *entered*: a "mountain" (a 2-d normal density evaluated on linspace(-2, 2)
  along each axis) with covariance `var` * I, peak in the centre. The environment uses var = 0.1.
- POMDP: only x is observed. The official restricted model solves that POMDP with FIB
  (`simplegrid_pomdp.jl`, discount 0.9) on a mountain of covariance 0.3 * I (not the environment's
  0.1) whose reward is that of the *current* state; `restricted_alphas()` reproduces that default.
- Restricted policy at observation x: a uniform belief over the 11 values of y, utilities
  U(x, a) = (1/H) Σ_y α_a(y, x), then the maximal-utility action (one-hot) or softmax(U / T).
"""

from __future__ import annotations

import functools

import numpy as np

HEIGHT = WIDTH = 11
N_ACTIONS = 4
UP, DOWN, LEFT, RIGHT = range(N_ACTIONS)
MOVES = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}  # (dy, dx)


def mountain(var: float, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(H, W) density of N(0, var * I) on the grid linspace(-2, 2, W) x linspace(-2, 2, H)."""
    xs, ys = np.linspace(-2, 2, width), np.linspace(-2, 2, height)
    X, Y = np.meshgrid(xs, ys)  # (H, W)
    return np.exp(-(X ** 2 + Y ** 2) / (2 * var)) / (2 * np.pi * var)


def next_state_table(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(S, A) int: the state reached from s by action a on the torus."""
    table = np.empty((height * width, N_ACTIONS), dtype=np.int64)
    for y in range(height):
        for x in range(width):
            for a, (dy, dx) in MOVES.items():
                table[y * width + x, a] = ((y + dy) % height) * width + (x + dx) % width
    return table


def fib_alphas(T: np.ndarray, O: np.ndarray, R: np.ndarray, gamma: float, tol: float = 1e-12,
               max_iter: int = 100_000) -> np.ndarray:
    """Fast Informed Bound (Hauskrecht 2000): one alpha-vector per action, iterated to a fixed point.

    T (A, S, S') transition probabilities, O (A, S', Z) observation probabilities, R (S, A) rewards.
        α_a(s) = R(s, a) + γ Σ_z max_a' Σ_s' T(s' | s, a) O(z | s', a) α_a'(s')
    Returns alphas (S, A) (column a is α_a: the official `alphas.h5` shape).
    """
    A, S, _ = T.shape
    alpha = np.zeros((A, S))
    TO = np.einsum("ast,atz->aszt", T, O)  # (A, S, Z, S'): T(s'|s,a) O(z|s',a)
    for _ in range(max_iter):
        backed = np.einsum("aszt,bt->aszb", TO, alpha).max(axis=3).sum(axis=2)  # (A, S)
        new = R.T + gamma * backed
        if np.max(np.abs(new - alpha)) < tol:
            alpha = new
            break
        alpha = new
    return alpha.T.copy()


def grid_pomdp(var: float = 0.3, height: int = HEIGHT, width: int = WIDTH):
    """(T, O, R) of the x-only grid POMDP in the official Julia model: deterministic moves, z = x(s'),
    reward of the current state for every action."""
    S = height * width
    nxt = next_state_table(height, width)
    T = np.zeros((N_ACTIONS, S, S))
    for a in range(N_ACTIONS):
        T[a, np.arange(S), nxt[:, a]] = 1.0
    O = np.zeros((N_ACTIONS, S, width))
    O[:, np.arange(S), np.arange(S) % width] = 1.0
    R = np.repeat(mountain(var, height, width).reshape(S, 1), N_ACTIONS, axis=1)
    return T, O, R


def restricted_alphas(var: float = 0.3, gamma: float = 0.9, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(S, A) FIB alpha-vectors of the grid POMDP (the official default: var 0.3, γ 0.9)."""
    return _alphas(float(var), float(gamma), int(height), int(width)).copy()


@functools.lru_cache(maxsize=8)
def _alphas(var: float, gamma: float, height: int, width: int) -> np.ndarray:
    return fib_alphas(*grid_pomdp(var, height, width), gamma=gamma)


def utilities(alphas: np.ndarray, x: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """(N, A) utilities of a uniform belief over y at observed columns x (N,)."""
    per_state = alphas.reshape(height, width, -1)  # (H, W, A)
    return per_state.mean(axis=0)[np.asarray(x)]


def restricted_policy(alphas: np.ndarray, temperature: float = -1.0, height: int = HEIGHT,
                      width: int = WIDTH) -> np.ndarray:
    """(W, A) P̂(a | x) for every column x: the maximal-utility action one-hot (temperature <= 0, the
    official default; ties go to the first action, as numpy's argmax) or softmax(U / temperature)."""
    U = utilities(alphas, np.arange(width), height, width)
    if temperature <= 0:
        return np.eye(U.shape[1])[U.argmax(axis=1)]
    z = U / temperature
    z = np.exp(z - z.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)
