"""The tuning of lecture.yaml's NQM sweep simulated on the closed form: how often a study gets within
10% of the exact optimum, in seconds instead of minutes (issue 25; `tune_regret.py` measures real runs).

A simulated study is one study of a `scaling_*` experiment as `suite tune` runs it: the space the suite
builds for it (`search_space`, the experiment's `space` overrides), the suite's own sampler
(`make_sampler`: TPE, its last trials refining around the incumbent), trials
asked in populations of `--population` (the constant liar keeps them apart) and told together, and the
steps-to-target pruning at the median completed trial (`target_step_limit`). A trial's value is the
exact expected-risk steps of its hyperparameters (`suite.theory.moment_recursion`), interpolated
log-linearly between steps as the runs read them; one that never gets there is valued as the objective
values it (budget × risk / target); a diverged one is pruned. What it leaves out: the seeds' θ₀ (a real
trial's value is the mean curve of 2 seeds) and the re-evaluation of the top trials (here the best trial
wins).

Per batch size it prints p, the share of `--studies` simulated studies within 10% of the optimum, and
the chance that the median of a cell's 3 studies is: p³ + 3p²(1 − p).

`--lr-of-cap` searches the lr as a fraction of the problem's stability cap at the trial's own
hyperparameters (sampled first), log-uniform on [LOW / largest cap, 2]: the stability edge becomes a
straight line in the search coordinates. A design to compare, not one the suite uses.

Usage: python benchmarks/perf/tune_sim.py [--experiment scaling_momentum_tuned] [--sizes 512,2048]
       [--studies 24] [--trials 24] [--population 8] [--lr-of-cap]
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import optuna
import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from suite.registry import get_registry  # noqa: E402
from suite.report.scaling import closed_form_optimum  # noqa: E402
from suite.theory import moment_recursion  # noqa: E402
from suite.tuning import caps  # noqa: E402
from suite.tuning.objective import target_step_limit  # noqa: E402
from suite.tuning.sampling import design_seed, make_pruner, make_sampler  # noqa: E402
from suite.tuning.space import search_space  # noqa: E402

MOMENTUM = "optimizer.momentum"
WITHIN = 1.10


def experiment(name: str) -> dict:
    """One experiment of lecture.yaml."""
    return yaml.safe_load((ROOT / "benchmarks" / "lecture.yaml").read_text())["experiments"][name]


def method(exp: dict) -> str:
    """The report's name of the experiment's method (its closed form): momentum only."""
    sgd = exp["optimizer"]["sgd"]
    return "momentum β tuned" if "momentum" not in sgd else f"momentum β={sgd['momentum']:g}"


def steps(lr: float, beta: float, h: np.ndarray, batch_size: int, target: float, budget: int) -> float | None:
    """The expected risk's steps to ``target`` (None: diverged), as a trial's value reads them."""
    with np.errstate(over="ignore", invalid="ignore"):
        risks = moment_recursion([lr], h, h, batch_size, momentum=beta).risks(budget)[0]
    if not np.all(np.isfinite(risks)) or risks.max() > 1e6:
        return None
    hit = np.flatnonzero(risks <= target)
    if not len(hit):
        return budget * max(float(risks[-1]), target) / target
    t = int(hit[0])
    if t == 0:
        return 0.0
    a, b = math.log(risks[t - 1]), math.log(risks[t])
    return t - 1 + (a - math.log(target)) / (a - b)


def study(spaces: dict, batch_size: int, seed: int, args: argparse.Namespace, h: np.ndarray, target: float,
          budget: int, cap_at) -> float:
    """The best value of one simulated study (``cap_at(values)``: the lr cap at a trial's values)."""
    plan = types.SimpleNamespace(legacy_name=f"sim/b{batch_size}")
    sampler = make_sampler(plan, args.trials, seed, salt="", population=args.population,
                           design_seed=design_seed(seed, plan, ""))
    st = optuna.create_study(sampler=sampler, pruner=make_pruner("median"))
    lr_space = spaces[caps.LR]
    for start in range(0, args.trials, args.population):
        asked = [st.ask() for _ in range(min(args.population, args.trials - start))]
        limit = target_step_limit(st)
        told = []
        for trial in asked:
            values = {k: s.suggest(trial, k) for k, s in spaces.items() if k != caps.LR}
            beta = float(values.get(MOMENTUM, args.fixed.get(MOMENTUM, 0.0)))
            if args.lr_of_cap:
                low = lr_space.low / cap_at({})  # the largest cap over the space: the lr reaches LOW at every β
                lr = cap_at(values) * trial.suggest_float(f"{caps.LR}.of_cap", low, caps.CAP_FACTOR, log=True)
            else:
                lr = lr_space.suggest(trial, caps.LR)
            told.append((trial, steps(lr, beta, h, batch_size, target, budget)))
        for trial, value in told:
            if value is None or (limit is not None and value > limit):
                st.tell(trial, state=optuna.trial.TrialState.PRUNED)
            else:
                st.tell(trial, value)
    return st.best_value


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="scaling_momentum_tuned")
    ap.add_argument("--sizes", default="512,2048")
    ap.add_argument("--studies", type=int, default=24)
    ap.add_argument("--trials", type=int, default=None, help="default: the experiment's")
    ap.add_argument("--population", type=int, default=8)
    ap.add_argument("--lr-of-cap", action="store_true")
    args = ap.parse_args()
    exp = experiment(args.experiment)
    if set(exp.get("optimizer", {})) != {"sgd"} or "averager" in exp:
        print(f"{args.experiment}: only the plain sgd (momentum) experiments are simulated", file=sys.stderr)
        return 2
    tune = exp["tune"]
    args.trials = args.trials or int(tune["trials"])
    target = float(str(tune["objective"]).split(":")[1])
    dim = int(exp["problem"]["nqm"]["dim"])
    h = 1.0 / np.arange(1, dim + 1)
    fixed = {f"optimizer.{k}": v for k, v in exp["optimizer"]["sgd"].items()}
    registry = get_registry()
    components = {"problem": "nqm", "optimizer": "sgd", "scheduler": "constant", "averager": "none",
                  "sampler": "shuffle"}
    fixed = {**fixed, "problem.dim": dim}
    args.fixed = fixed
    spaces = search_space(registry, components, fixed, tune.get("space", {}))

    def cap_at(values: dict) -> float:
        """The cap at ``values`` (empty: the largest over the other tuned hyperparameters' spaces)."""
        return caps.lr_cap(registry, components, {**fixed, **values}, {} if values else spaces)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
    name = method(exp)
    print(f"{args.experiment}: {args.trials} trials in populations of {args.population}"
          f"{', lr as a fraction of the cap' if args.lr_of_cap else ''}; {args.studies} studies per size")
    for b in (int(x) for x in args.sizes.split(",")):
        best = closed_form_optimum(name, b, dim, 1.0, target)
        sgd = closed_form_optimum("SGD", b, dim, 1.0, target)
        budget = max(50, math.ceil(4 * sgd.steps))  # steps:auto (suite.tuning.budget)
        regrets = [study(spaces, b, seed, args, h, target, budget, cap_at) / best.steps for seed in range(args.studies)]
        p = sum(r <= WITHIN for r in regrets) / len(regrets)
        print(f"  B={b:5d}: optimum {best.steps:g} steps; study regret median ×{statistics.median(regrets):.3f}, "
              f"worst ×{max(regrets):.3f}; p(study ≤ ×{WITHIN}) = {p:.2f}; p(cell ≤ ×{WITHIN}) = "
              f"{p**3 + 3 * p**2 * (1 - p):.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
