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
* :func:`precond_risk` (constant-lr preconditioned SGD at any t);
* :func:`moment_recursion` (:class:`MomentRecursion`), :func:`first_steps` and
  :func:`steps_to_target`: the exact second-moment recursion of constant-hyperparameter SGD,
  preconditioned SGD, heavy-ball momentum and the EMA of the iterates, and the first step at which
  its expected risk reaches a target;
* :func:`optimum` (and :func:`best_steps_to_target` for SGD): the fewest such steps minimised over
  the tuned hyperparameters (the lr, or the lr and β), the exact optimum a tuner should find.

:class:`MomentTracker` follows the exact second moments of a run step by step for whatever lr
each step used (any schedule, heavy-ball momentum, diagonal preconditioning, weight decay and
an iterate average with any blend weights); the ``nqm`` problem uses it to log ``theory_risk``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

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


# -- exact steps to a target, and their optimum over the tuned hyperparameters ---------------------
@dataclass(frozen=True)
class MomentRecursion:
    """The exact second moments of constant-hyperparameter NQM runs, one row per setting.

    Per dimension a step is linear in the variables u = (θ, m, θ̃) (the momentum buffer m only
    with momentum, the EMA θ̃ only with one) plus noise: u' = A u + e ε with ε ~ N(0, c/B), so
    the k second moments z = vech E[u uᵀ] follow the affine map z' = M z + b exactly. The EMA's
    first update copies θ (γ₁ = 0, as ``AveragedModel`` does), so step 1 has a map of its own
    (``first``). The risk is Σ ``weight`` · z: ½ h E θ², or ½ h E θ̃² for the EMA. Arrays are
    component-first: z [k, S, d] for S settings and d dimensions, M [k, k, S, d].
    """

    step: tuple[Array, Array]  # (M [k, k, S, d], b [k, S, d])
    first: tuple[Array, Array]  # the map of step 1
    z0: Array  # [k, S, d]
    weight: Array  # [k, d]
    radius: Array | None = None  # [S, d]: the spectral radius of A (M's is its square); None: from M's eigenvalues

    @property
    def settings(self) -> int:
        return self.z0.shape[1]

    def risk(self, z: Array) -> Array:
        """Total expected risk of each setting (row) of the moments ``z``."""
        return np.einsum("kd,ksd->s", self.weight, z)

    def rows(self, rows: Array) -> MomentRecursion:
        """The recursion of some of the settings."""
        return MomentRecursion((self.step[0][:, :, rows], self.step[1][:, rows]),
                               (self.first[0][:, :, rows], self.first[1][:, rows]), self.z0[:, rows], self.weight,
                               None if self.radius is None else self.radius[rows])

    def advance(self, z: Array, t: int) -> Array:
        """The moments after step ``t`` (1-based) from those before it."""
        M, b = self.first if t == 1 else self.step
        out = M[:, 0] * z[0]  # all rows i at once, each summed over j in the same order as one row alone
        for j in range(1, len(z)):
            out = out + M[:, j] * z[j]
        return out + b

    def risks(self, steps: int) -> Array:
        """Expected risk of every setting at steps 0..``steps``: an array ``[S, steps + 1]``."""
        z, out = self.z0, [self.risk(self.z0)]
        for t in range(1, steps + 1):
            z = self.advance(z, t)
            out.append(self.risk(z))
        return np.stack(out, -1)

    def stable(self) -> Array:
        """Per setting: every dimension's map contracts (spectral radius < 1). The eigenvalues of
        M are the products λᵢλⱼ of A's, so it contracts exactly where A does: :attr:`radius` where
        given (:func:`moment_recursion`'s, in closed form), else M's own eigenvalues."""
        M = np.moveaxis(self.step[0], (0, 1), (-2, -1))
        if not np.all(np.isfinite(M)):
            return np.zeros(self.settings, dtype=bool)
        if self.radius is not None:
            radius = self.radius
        else:
            radius = np.abs(M[..., 0, 0]) if M.shape[-1] == 1 else np.abs(np.linalg.eigvals(M)).max(-1)
        return np.all(radius < 1, axis=-1)


def _second_moments(A: Array, e: Array, var: Array) -> tuple[Array, Array]:
    """The affine map (M, b) of vech E[u uᵀ] under u' = A u + e ε, Var ε = ``var`` (per dimension);
    A [n, n, S, d], e [n, S, d]."""
    n = len(A)
    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    M = np.zeros((len(pairs), len(pairs), *A.shape[2:]))
    b = np.zeros((len(pairs), *A.shape[2:]))
    for P, (i, j) in enumerate(pairs):
        b[P] = var * e[i] * e[j]
        for Q, (k, l) in enumerate(pairs):
            M[P, Q] = A[i, k] * A[j, l] + (A[i, l] * A[j, k] if k != l else 0.0)
    return M, b


def moment_recursion(lrs: ArrayLike, h: ArrayLike, c: ArrayLike, batch_size: float, *, p: float = 0.0,
                     momentum: ArrayLike = 0.0, ema: float | None = None, s0: ArrayLike = 1.0) -> MomentRecursion:
    """The :class:`MomentRecursion` of constant-lr runs θ ← θ − α H^{−p} m, m ← βm + g (heavy ball;
    β = 0: SGD), from E θ₀² = ``s0``, m₀ = 0, one setting per entry of ``lrs`` (``momentum``
    broadcast against it). ``ema``: the risk read is that of the EMA θ̃ ← γθ̃ + (1−γ)θ with
    γ = ``ema`` (θ̃₀ = θ₀; the first update copies θ₁), as the ``ema`` averager computes it."""
    h, c = _f(h), _f(c)
    lr = np.atleast_1d(_f(lrs))
    beta = np.broadcast_to(_f(momentum), lr.shape)[:, None]
    a = lr[:, None] * h ** -p  # per-dimension lr, [S, d]
    with_m, with_avg = bool(np.any(beta != 0)), ema is not None
    n = 1 + with_m + with_avg

    def update(gamma: float) -> tuple[Array, Array]:
        """A step's (A, e): u' = A u + e ε, with the EMA's decay ``gamma``."""
        A = np.zeros((n, n, *a.shape))
        e = np.zeros((n, *a.shape))
        A[0, 0], e[0] = 1 - a * h, -a
        if with_m:  # m' = hθ + βm + ε, θ' = θ − a m'
            A[0, 1] = -a * beta
            A[1, 0], A[1, 1], e[1] = h, beta, 1.0
        if with_avg:  # θ̃' = γθ̃ + (1−γ)θ'
            A[-1] = (1 - gamma) * A[0]
            A[-1, -1] += gamma
            e[-1] = (1 - gamma) * e[0]
        return A, e

    pairs = [(i, j) for i in range(n) for j in range(i, n)]
    s0 = np.broadcast_to(_f(s0), h.shape)
    z0 = np.zeros((len(pairs), *a.shape))
    avg = n - 1 if with_avg else 0  # the variable whose risk is read
    for P, (i, j) in enumerate(pairs):
        if {i, j} <= {0, avg}:  # θ̃₀ = θ₀
            z0[P] = s0
    weight = np.zeros((len(pairs), len(h)))
    weight[pairs.index((avg, avg))] = 0.5 * h
    gamma = float(ema) if with_avg else 0.0
    A, e = update(gamma)
    step = _second_moments(A, e, c / batch_size)
    first = _second_moments(*update(0.0), c / batch_size) if with_avg else step
    return MomentRecursion(step, first, z0, weight, _radius(A, with_m, gamma if with_avg else None))


def _radius(A: Array, with_m: bool, gamma: float | None) -> Array:
    """The spectral radius of :func:`moment_recursion`'s A ([n, n, S, d]) per setting and dimension,
    in closed form (an eigenvalue solver per dimension took a third of a ``make bench`` report's
    closed-form optima). No variable depends on the EMA θ̃, so A is block lower-triangular: its
    eigenvalues are those of the (θ, m) block and γ. A 2×2 block's are tr/2 ± √(tr²/4 − det), and
    the larger is at least √|det| (their product's root), which holds the edge exactly where
    rounding would not: β = 1 gives det = 1, radius 1, not stable."""
    if not with_m:
        block = np.abs(A[0, 0])
    else:
        half, det = (A[0, 0] + A[1, 1]) / 2, A[0, 0] * A[1, 1] - A[0, 1] * A[1, 0]
        with np.errstate(invalid="ignore", over="ignore"):
            root = np.sqrt((half * half - det).astype(complex))
            block = np.maximum(np.maximum(np.abs(half + root), np.abs(half - root)), np.sqrt(np.abs(det)))
    return block if gamma is None else np.maximum(block, abs(gamma))


def _monotone_rows(rec: MomentRecursion) -> Array:
    """Rows whose risk provably never rises: one moment per dimension (plain or preconditioned SGD,
    z' = m z + b with 0 ≤ m < 1) started at or above its fixed point b / (1 − m) in every dimension."""
    if len(rec.z0) != 1:
        return np.zeros(rec.settings, dtype=bool)
    m, b = rec.step[0][0, 0], rec.step[1][0]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.all((m < 1) & (rec.z0[0] >= b / (1 - m)), axis=-1)


def _bisect(rec: MomentRecursion, target: float) -> tuple[Array, Array]:
    """(first step at or below ``target``, the risk the step before) of a monotone recursion: the closed form
    z(t) = z* + (z₀ − z*) mᵗ, by doubling then bisection (exact for a non-increasing risk)."""
    m, b = rec.step[0][0, 0], rec.step[1][0]
    fixed = b / (1 - m)
    start, w = rec.z0[0] - fixed, rec.weight[0]
    steady = (w * fixed).sum(-1)

    with np.errstate(divide="ignore"):
        log_m = np.log(m)

    def total(t: Array) -> Array:
        with np.errstate(invalid="ignore"):
            decay = np.where(t[:, None] == 0, 1.0, np.exp(t[:, None] * log_m))  # mᵗ (m = 0 included)
        return steady + (w * start * decay).sum(-1)

    steps, risk = np.full(len(steady), np.inf), np.full(len(steady), np.inf)
    ok = steady < target
    hi = np.ones(len(steady))
    while np.any(above := ok & (total(hi) > target)):
        hi = np.where(above, 2 * hi, hi)
    lo = np.where(hi > 1, hi // 2, 0.0)  # risk(lo) > target (or lo = 0), risk(hi) <= target
    while np.any(ok & (hi - lo > 1)):
        mid = np.floor((lo + hi) / 2)
        reached = total(mid) <= target
        hi, lo = np.where(ok & reached, mid, hi), np.where(ok & ~reached, mid, lo)
    steps[ok] = hi[ok]
    risk[ok] = total(np.maximum(hi - 1, 0))[ok]
    return steps, risk


PRUNE_AFTER = 2000


def _scan(rec: MomentRecursion, target: float, limit: float, near: float | None) -> tuple[Array, Array]:
    """(first step at or below ``target``, the risk the step before) of each setting, step by step up to
    ``limit`` (exact for any recursion). A setting is dropped once the risk its noise alone has
    built up since step 1 (a lower bound on its risk that never falls) is above the target (with
    ``near``, only in a scan longer than :data:`PRUNE_AFTER` steps: a speed-up, not a result). With
    ``near`` it stops once t > (1 + ``near``) × the fewest steps a setting has needed, + 1 (those
    that have not got there are left at inf: only the best are wanted)."""
    steps, risk = np.full(rec.settings, np.inf), np.full(rec.settings, np.inf)
    live = np.arange(rec.settings)
    prune = near is None or limit > PRUNE_AFTER  # a long scan: worth the noise moments' cost
    z, before = rec.z0, rec.risk(rec.z0)
    noise = np.zeros_like(z)  # the moments the noise of steps 2..t alone adds, from zero
    t = 0
    while len(live) and t < limit:
        t += 1
        with np.errstate(over="ignore", invalid="ignore"):
            z = rec.advance(z, t)
            r = rec.risk(z)
            if prune and t > 1:
                noise = rec.advance(noise, t)
            hit = r <= target
            keep = ~hit & np.isfinite(r) & ~(rec.risk(noise) > target)
        steps[live[hit]], risk[live[hit]] = t, before[hit]
        before = r
        if hit.any() and near is not None:
            limit = min(limit, math.floor((1 + near) * t) + 1)
        if not keep.all():
            rows = np.flatnonzero(keep)
            live, z, noise, before, rec = live[rows], z[:, rows], noise[:, rows], before[rows], rec.rows(rows)
    return steps, risk


def first_steps(rec: MomentRecursion, target: float, max_steps: float = math.inf,
                near: float | None = None) -> tuple[Array, Array]:
    """Per setting of ``rec``: (the first step t at which the total expected risk is <= ``target``,
    the risk at t − 1: how near it is to needing a step fewer), exactly. ``inf`` where it never
    is: an unstable setting, or not within ``max_steps``. Settings whose risk provably never rises
    (:func:`_monotone_rows`) are bisected on their closed form (any t, however large); all others
    are followed step by step. With ``near`` a step-by-step setting that needs more than
    (1 + ``near``) × the fewest steps any needs, + 1, is left at inf (a search for the minimum
    needs only the settings near it)."""
    steps, risk = np.full(rec.settings, np.inf), np.full(rec.settings, np.inf)
    r0 = rec.risk(rec.z0)
    at_start = r0 <= target
    steps[at_start], risk[at_start] = 0.0, 0.0
    todo = ~at_start & rec.stable()
    mono = todo & _monotone_rows(rec)
    if mono.any():
        steps[mono], risk[mono] = _bisect(rec.rows(mono), target)
    rest = np.flatnonzero(todo & ~mono)
    if len(rest):
        fewest = steps.min()
        limit = max_steps if near is None or math.isinf(fewest) else min(max_steps, math.floor((1 + near) * fewest) + 1)
        steps[rest], risk[rest] = _scan(rec.rows(rest), target, limit, near)
    return steps, risk


def steps_to_target(lrs: ArrayLike, h: ArrayLike, c: ArrayLike, batch_size: float, target: float, *, p: float = 0.0,
                    s0: ArrayLike = 1.0, momentum: ArrayLike = 0.0, ema: float | None = None,
                    max_steps: float = 10**6) -> Array:
    """For each constant learning rate in ``lrs``: the first step t at which the total expected
    risk is <= ``target`` (``inf`` where it never is: unstable, a steady state above the target,
    or not within ``max_steps``), for (preconditioned) SGD, heavy-ball momentum ``momentum`` and
    the EMA ``ema`` of the iterates (:func:`moment_recursion`; :func:`first_steps`)."""
    rec = moment_recursion(lrs, h, c, batch_size, p=p, momentum=momentum, ema=ema, s0=s0)
    return first_steps(rec, target, max_steps)[0]


class Optimum(NamedTuple):
    """The fewest steps to a target over the tuned hyperparameters, and where they are."""

    steps: float
    lr: float
    momentum: float


def optimum(h: ArrayLike, c: ArrayLike, batch_size: float, target: float, *, p: float = 0.0, momentum: float = 0.0,
            ema: float | None = None, tune_momentum: bool = False, s0: ArrayLike = 1.0,
            max_steps: float | None = None) -> Optimum:
    """The exact optimum of a tuned NQM method: the fewest steps for the expected risk (of the
    EMA's iterate with ``ema``) to reach ``target``, minimised over the lr (and over the momentum
    β ∈ [0, 0.999] with ``tune_momentum``; else β = ``momentum``), and that lr and β.

    The steps of each setting are exact (:func:`first_steps`). The search (:func:`_grid_search`): a
    log grid of the lr over (10⁻⁶, 1) × the stability cap 2(1+β) / max h^{1−p} (200 points; for a
    method followed step by step 10 points per decade from 10⁻⁴, or lower where 1% of plain SGD's
    best lr is lower; with ``tune_momentum`` 5 per decade against 1 − β on a log grid over
    [10⁻³, 1], 4 per decade), then rounds of finer grids around the best few points.
    ``tests/test_theory_optima.py`` holds it within 1% of brute-force searches on grids 10 to 50
    times finer. Step-by-step methods are followed up to ``max_steps`` (default: 4 × plain SGD's
    optimum + the EMA's lag 2 / (1 − γ) + 100)."""
    h, c = _f(h), _f(c)
    top = float(np.max(h ** (1 - p)))
    stepwise = ema is not None or tune_momentum or momentum != 0
    floor = -6.0  # log10 of the smallest lr / cap searched
    if stepwise:
        sgd = optimum(h, c, batch_size, target, p=p, s0=s0)
        floor = min(-4.0, math.floor(math.log10(0.01 * sgd.lr * top / 2))) if math.isfinite(sgd.lr) else floor
        if max_steps is None:
            max_steps = 4 * sgd.steps + 100 + (2 / (1 - ema) if ema is not None else 0)
    max_steps = math.inf if max_steps is None else max_steps

    def evaluate(coords: Array, limit: float) -> tuple[Array, Array]:
        beta = 1 - 10 ** coords[:, 1] if tune_momentum else np.full(len(coords), momentum)
        lrs = 10 ** coords[:, 0] * 2 * (1 + beta) / top
        rec = moment_recursion(lrs, h, c, batch_size, p=p, momentum=beta, ema=ema, s0=s0)
        return first_steps(rec, target, limit, near=NEAR)

    if tune_momentum:
        box = np.array([[floor, 0.0], [-3.0, 0.0]])
        points = [(1 - 5 * int(floor), 13), (7, 7), (7, 7), (7, 7), (7, 7)]
    else:
        box = np.array([[floor, 0.0], [0.0, 0.0]])
        points = [(1 - 10 * int(floor), 1), (21, 1), (21, 1), (21, 1)] if stepwise else [(200, 1), (50, 1), (50, 1)]
    best = _grid_search(evaluate, box, points, max_steps)
    if best is None:
        return Optimum(math.inf, math.nan, math.nan)
    steps, (x, u) = best
    beta = 1 - 10**u if tune_momentum else momentum
    return Optimum(steps, float(10**x * 2 * (1 + beta) / top), float(beta))


NEAR = 0.1  # the search keeps the settings within 10% (+ 1 step) of the fewest steps
BEAM = 4  # ... and refines around the best few of them


def _grid_search(evaluate, box: Array, points: list[tuple[int, int]], max_steps: float) -> tuple[float, Array] | None:
    """Minimise ``evaluate`` (coords [S, 2], a step limit -> (steps, risk the step before)) over
    ``box`` ([[lo, hi]] per axis): a grid of ``points[0]``, then for each later entry a grid of that
    many points on the box of one cell of the last grid around each of the :data:`BEAM` best points
    of the last grid (fewest steps, then the lowest risk the step before: the nearest to a step
    fewer). Returns (steps, coords) of the best, ``None`` if none gets there."""
    best: tuple[float, float, Array] | None = None
    boxes = [(box[:, 0], box[:, 1])]
    for n in points:
        grids, cells = [], []
        for lo, hi in boxes:
            axes = [np.linspace(lo[k], hi[k], n[k]) for k in range(2)]
            grids.append(np.stack([g.ravel() for g in np.meshgrid(*axes, indexing="ij")], -1))
            cells.append(np.broadcast_to([(hi[k] - lo[k]) / max(n[k] - 1, 1) for k in range(2)], grids[-1].shape))
        coords, cell = np.concatenate(grids), np.concatenate(cells)
        limit = max_steps if best is None else min(max_steps, math.floor((1 + NEAR) * best[0]) + 1)
        steps, risk = evaluate(coords, limit)
        order = [i for i in np.lexsort((risk, steps)) if math.isfinite(steps[i])][:BEAM]
        if not order:
            break
        if best is None or (steps[order[0]], risk[order[0]]) < best[:2]:
            best = (float(steps[order[0]]), float(risk[order[0]]), coords[order[0]])
        boxes = [(np.maximum(coords[i] - cell[i], box[:, 0]), np.minimum(coords[i] + cell[i], box[:, 1]))
                 for i in order]
    return None if best is None else (best[0], best[2])


def best_steps_to_target(h: ArrayLike, c: ArrayLike, batch_size: float, target: float, *, p: float = 0.0,
                         s0: ArrayLike = 1.0) -> tuple[float, float]:
    """The fewest steps constant-lr (preconditioned) SGD needs to bring the expected risk to
    ``target``, minimised over the learning rate, and that learning rate: ``(steps, lr)``
    (:func:`optimum`). With ``s0 = 1`` (θ₀ ~ N(0, I)) this is the closed-form optimum of
    ``shared/reference/nqm.md``."""
    best = optimum(h, c, batch_size, target, p=p, s0=s0)
    return best.steps, best.lr


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
        term, in about half the arithmetic (this runs once per step of every NQM run, stacked too).
        An unstable recursion's moments overflow to inf and nan without a warning, as a diverging
        run's loss does (the run reports its divergence)."""
        with np.errstate(over="ignore", invalid="ignore"):
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
