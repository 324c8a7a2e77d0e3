"""Closed forms for the noisy quadratic model (``shared/reference/nqm.md``; Zhang et al. 2019).

The NQM: L(θ) = ½ Σ h_i θ_i², a mini-batch gradient g = Hθ + ε with ε_i ~ N(0, c_i / B).
Everything here is per dimension and vectorised over numpy arrays (``h``, ``c`` and ``s0``
broadcast together); sum the result over dimensions for the total risk. ``s`` is the second
moment E[θ_i²] and the risk of a dimension is ½ h_i s_i.

Pure functions:

* :func:`sgd_steady_risk`, :func:`sgd_risk` (constant lr, any t), :func:`sgd_risk_trajectory`
  (any lr schedule: s(t+1) = (1 − α_t h)² s(t) + α_t² c / B);
* :func:`momentum_steady_risk` and :func:`momentum_risk` (the exact 3×3 moment recursion);
* :func:`precond_steady_risk` (θ ← θ − α H^{−p} g);
* :func:`ema_factor` and :func:`ema_steady_risk` (θ̃ ← γθ̃ + (1−γ)θ);
* :func:`steps_lower_bound` (steps ≥ d / (2 L* B));
* :func:`precond_risk`, :func:`steps_to_target` and :func:`best_steps_to_target`: the first step
  at which the expected risk of constant-lr (preconditioned) SGD reaches a target, and its
  minimum over the learning rate (the closed-form optimum a tuner should find).

:class:`MomentTracker` follows the exact second moments of a run step by step for whatever lr
each step used (any schedule, heavy-ball momentum, diagonal preconditioning, weight decay and
an iterate average with any blend weights); the ``nqm`` problem uses it to log ``theory_risk``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

Array = NDArray[np.float64]


def _f(x: ArrayLike) -> Array:
    return np.asarray(x, dtype=np.float64)


def sgd_steady_risk(lr: float, h: ArrayLike, c: ArrayLike, batch_size: int) -> Array:
    """Steady-state risk of constant-lr SGD per dimension: αc / (2B(2 − αh)) (stable iff
    0 < αh < 2)."""
    h, c = _f(h), _f(c)
    return lr * c / (2 * batch_size * (2 - lr * h))


def sgd_risk(lr: float, h: ArrayLike, c: ArrayLike, batch_size: int, s0: ArrayLike, t: int) -> Array:
    """Expected risk per dimension after ``t`` steps of constant-lr SGD from E[θ₀²] = ``s0``:
    (1−αh)^{2t} ℓ(0) + αc / (2B(2−αh)) · (1 − (1−αh)^{2t})."""
    h = _f(h)
    decay = (1 - lr * h) ** (2 * t)
    return decay * 0.5 * h * _f(s0) + sgd_steady_risk(lr, h, c, batch_size) * (1 - decay)


def sgd_risk_trajectory(lrs: ArrayLike, h: ArrayLike, c: ArrayLike, batch_size: int, s0: ArrayLike) -> Array:
    """Total expected risk at steps 0..T of SGD with the lr sequence ``lrs`` (α_0..α_{T-1}):
    s(t+1) = (1 − α_t h)² s(t) + α_t² c / B. Returns an array of length T + 1."""
    h, c = _f(h), _f(c)
    s = np.broadcast_to(_f(s0), h.shape).copy()
    out = [0.5 * float((h * s).sum())]
    for a in _f(lrs):
        s = (1 - a * h) ** 2 * s + a**2 * c / batch_size
        out.append(0.5 * float((h * s).sum()))
    return np.asarray(out)


def momentum_steady_risk(lr: float, beta: float, h: ArrayLike, c: ArrayLike, batch_size: int) -> Array:
    """Steady-state risk of heavy-ball momentum (m ← βm + g, θ ← θ − αm) per dimension:
    (1+β) αc / (2B(1−β)(2+2β−αh)) (stable iff αh < 2(1+β))."""
    h, c = _f(h), _f(c)
    return (1 + beta) * lr * c / (2 * batch_size * (1 - beta) * (2 + 2 * beta - lr * h))


def momentum_risk(
    lr: float, beta: float, h: ArrayLike, c: ArrayLike, batch_size: int, s0: ArrayLike, t: int
) -> Array:
    """Exact expected risk per dimension after ``t`` heavy-ball steps from E[θ₀²] = ``s0``.

    The 3×3 linear recursion of nqm.md on z = (E x², E v², E xv), v = θ_{t} − θ_{t−1}, with
    a = αh: z ← M z + (α²c/B)(1, 1, 1), z₀ = (s₀, 0, 0); solved as
    z(t) = Mᵗ z₀ + (I − Mᵗ)(I − M)⁻¹ b.
    """
    h, c = np.broadcast_arrays(_f(h), _f(c))
    s0 = np.broadcast_to(_f(s0), h.shape)
    a = lr * h
    b2 = np.full_like(a, beta**2)
    M = np.stack(
        [
            np.stack([(1 - a) ** 2, b2, 2 * beta * (1 - a)], -1),
            np.stack([a**2, b2, -2 * a * beta], -1),
            np.stack([-a * (1 - a), b2, beta * (1 - 2 * a)], -1),
        ],
        -2,
    )
    b = (lr**2 * c / batch_size)[..., None] * np.ones(3)
    z0 = np.stack([s0, np.zeros_like(s0), np.zeros_like(s0)], -1)
    Mt = np.linalg.matrix_power(M, t)
    eye = np.eye(3)
    fixed = np.linalg.solve(eye - M, b[..., None])[..., 0]
    z = (Mt @ z0[..., None])[..., 0] + ((eye - Mt) @ fixed[..., None])[..., 0]
    return 0.5 * h * z[..., 0]


def precond_steady_risk(lr: float, p: float, h: ArrayLike, c: ArrayLike, batch_size: int) -> Array:
    """Steady-state risk of preconditioned SGD θ ← θ − α H^{−p} g per dimension:
    αc h^{−p} / (2B(2 − αh^{1−p})); the transient decays as (1 − αh^{1−p})^{2t}."""
    h, c = _f(h), _f(c)
    return lr * c * h**-p / (2 * batch_size * (2 - lr * h ** (1 - p)))


def ema_factor(gamma: float, lr: float, h: ArrayLike) -> Array:
    """How much an EMA of the iterates (θ̃ ← γθ̃ + (1−γ)θ) scales SGD's steady-state risk,
    per dimension: (1−γ)(1+rγ) / ((1+γ)(1−rγ)) with r = 1 − αh."""
    r = 1 - lr * _f(h)
    return (1 - gamma) * (1 + r * gamma) / ((1 + gamma) * (1 - r * gamma))


def ema_steady_risk(gamma: float, lr: float, h: ArrayLike, c: ArrayLike, batch_size: int) -> Array:
    """Steady-state risk of the EMA of constant-lr SGD iterates, per dimension."""
    return sgd_steady_risk(lr, h, c, batch_size) * ema_factor(gamma, lr, h)


def steps_lower_bound(dim: int, target: float, batch_size: int) -> float:
    """Lower bound on the steps any SGD-type method needs to reach risk ``target`` on the NQM
    with c = h: d / (2 L* B)."""
    return dim / (2 * target * batch_size)


def precond_risk(lr: ArrayLike, p: float, h: ArrayLike, c: ArrayLike, batch_size: int, s0: ArrayLike,
                 t: ArrayLike) -> Array:
    """Expected risk per dimension after ``t`` steps of constant-lr preconditioned SGD
    θ ← θ − α H^{−p} g from E[θ₀²] = ``s0`` (``p = 0``: plain SGD, :func:`sgd_risk`):
    steady + (ℓ(0) − steady)·(1 − αh^{1−p})^{2t}, steady = αc h^{−p} / (2B(2 − αh^{1−p})).
    ``lr`` and ``t`` may be column vectors (one row per learning rate) against ``h`` rows."""
    h, c, lr = _f(h), _f(c), _f(lr)
    a = lr * h ** (1 - p)
    steady = lr * c * h**-p / (2 * batch_size * (2 - a))
    start = 0.5 * h * _f(s0)
    return steady + (start - steady) * ((1 - a) ** 2) ** _f(t)


def steps_to_target(lrs: ArrayLike, h: ArrayLike, c: ArrayLike, batch_size: int, target: float, *, p: float = 0.0,
                    s0: ArrayLike = 1.0) -> Array:
    """For each constant learning rate in ``lrs``: the first step t at which the total expected
    risk of (preconditioned) SGD is <= ``target`` (``inf`` where it never is: unstable, or a
    steady state above the target). Found by doubling then bisection, which is exact when the
    risk decreases in t (it does whenever the start is above the steady state, per dimension)."""
    h, c = _f(h), _f(c)
    lrs = np.atleast_1d(_f(lrs))[:, None]
    a = lrs * h ** (1 - p)
    stable = np.all((a > 0) & (a < 2), axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        steady = lrs * c * h**-p / (2 * batch_size * (2 - a))
        excess = 0.5 * h * _f(s0) - steady
        log_rate = np.log((1 - a) ** 2)  # the excess decays as exp(t · log_rate)
    steady_total = np.where(stable, steady.sum(-1), np.inf)

    def total(t: Array) -> Array:
        with np.errstate(over="ignore", invalid="ignore"):
            return steady_total + (excess * np.exp(t[:, None] * log_rate)).sum(-1)

    out = np.full(len(lrs), np.inf)
    ok = stable & (steady_total < target)
    if not ok.any():
        return out
    out[ok & (steady_total + excess.sum(-1) <= target)] = 0.0
    todo = ok & ~(out == 0)
    hi = np.ones(len(lrs))
    while True:
        above = todo & (total(hi) > target)
        if not above.any():
            break
        hi = np.where(above, hi * 2, hi)
    lo = np.where(hi > 1, hi // 2, 0.0)  # risk(lo) > target, risk(hi) <= target
    while np.any(todo & (hi - lo > 1)):
        mid = np.floor((lo + hi) / 2)
        reached = total(mid) <= target
        hi = np.where(todo & reached, mid, hi)
        lo = np.where(todo & ~reached, mid, lo)
    out[todo] = hi[todo]
    return out


def best_steps_to_target(h: ArrayLike, c: ArrayLike, batch_size: int, target: float, *, p: float = 0.0,
                         s0: ArrayLike = 1.0, points: int = 200) -> tuple[float, float]:
    """The fewest steps constant-lr (preconditioned) SGD needs to bring the expected risk to
    ``target``, minimised over the learning rate, and that learning rate: ``(steps, lr)``.

    A log grid over (10⁻⁶, 1) × the stability limit 2 / max h^{1−p}, refined between the
    neighbours of the best point. With ``s0 = 1`` (θ₀ ~ N(0, I)) this is the closed-form optimum
    of ``shared/reference/nqm.md``."""
    h = _f(h)
    cap = 2 / float(np.max(h ** (1 - p)))
    grid = cap * np.logspace(-6, 0, points, endpoint=False)
    steps = steps_to_target(grid, h, c, batch_size, target, p=p, s0=s0)
    best_steps, best_lr = float(steps.min()), float(grid[np.argmin(steps)])
    for i in np.argsort(steps, kind="stable")[:3]:  # refine between the neighbours of the best few
        fine = np.linspace(grid[max(i - 1, 0)], grid[min(i + 1, points - 1)], points // 2)
        fine_steps = steps_to_target(fine, h, c, batch_size, target, p=p, s0=s0)
        j = int(np.argmin(fine_steps))
        if fine_steps[j] < best_steps:
            best_steps, best_lr = float(fine_steps[j]), float(fine[j])
    return best_steps, best_lr


class MomentTracker:
    """Exact second moments of one NQM run, advanced one optimizer step at a time.

    Per dimension it follows the iterate θ, the momentum buffer m and an iterate average θ̃.
    An update with lr α_t, per-dimension scale q (q = h^{−p} for preconditioning), curvature
    h + λ (weight decay λ) and noise ε ~ N(0, c/B) is::

        m' = (h+λ)θ + βm + ε          θ' = θ − α_t q (βm + (h+λ)θ + ε)
        θ̃' = γ_t θ̃ + (1 − γ_t) θ'      (γ_t = 1: no update; γ_t = 0: copy)

    a linear map of (θ, m, θ̃) plus noise, so the six second moments E θ², E m², E θm, E θ̃²,
    E θθ̃, E mθ̃ evolve in closed form. Started at the run's actual θ₀ (m = 0, θ̃ = θ₀),
    :meth:`risk` is E[L(θ_t) | θ₀].
    """

    def __init__(
        self,
        h: ArrayLike,
        c: ArrayLike,
        batch_size: int,
        theta0: ArrayLike,
        *,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        scale: ArrayLike = 1.0,
        average: bool = False,
    ) -> None:
        self.h = _f(h)
        self.noise_var = _f(c) / batch_size
        self.beta = float(momentum)
        self.h_eff = self.h + weight_decay
        self.scale = np.broadcast_to(_f(scale), self.h.shape)
        self.average = average
        s0 = np.broadcast_to(_f(theta0) ** 2, self.h.shape).copy()
        zero = np.zeros_like(s0)
        # E θ², E m², E θm; E θ̃², E θθ̃, E mθ̃
        self.xx, self.mm, self.xm = s0, zero.copy(), zero.copy()
        self.yy, self.xy, self.my = s0.copy(), s0.copy(), zero.copy()
        self.steps = 0

    def step(self, lr: float, blend: float = 1.0) -> None:
        """Advance by one optimizer step taken with lr ``lr``; ``blend`` is the average's γ_t.

        With u = E θ·(hθ + βm) and m' = hθ + βm + ε, the update θ' = θ − α(m') gives
        E m'² = h u + β E m·(hθ + βm) + v, E θ'm' = u − α E m'² and
        E θ'² = E θ² − α(u + E θ'm'): the same moments as expanding θ' = pθ + qm + rε term by
        term, in about half the arithmetic (this runs once per step of every NQM run, stacked too)."""
        a = lr * self.scale
        he, beta, v = self.h_eff, self.beta, self.noise_var
        u = he * self.xx + beta * self.xm
        mm = he * u + beta * (he * self.xm + beta * self.mm) + v
        xm = u - a * mm
        xx = self.xx - a * (u + xm)
        if self.average:
            g = blend
            m_y = he * self.xy + beta * self.my  # E m'θ̃ (ε is independent of θ̃)
            x_y = self.xy - a * m_y  # E θ'θ̃
            xy = xx + g * (x_y - xx)
            self.yy = g * g * self.yy + (1 - g) * (g * x_y + xy)
            self.xy = xy
            self.my = xm + g * (m_y - xm)
        self.xx, self.mm, self.xm = xx, mm, xm
        self.steps += 1

    def risk(self) -> float:
        """Expected risk ½ Σ h E[θ²] of the iterate."""
        return 0.5 * float((self.h * self.xx).sum())

    def average_risk(self) -> float | None:
        """Expected risk of the iterate average, or ``None`` when there is none."""
        return 0.5 * float((self.h * self.yy).sum()) if self.average else None
