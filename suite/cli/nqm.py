"""``suite nqm fit``: the noisy quadratic model fitted to a network at a checkpoint, and its
predicted steps to a target and critical batch size per method (:mod:`suite.nqmfit`)."""

from __future__ import annotations

import click

from suite.cli.common import format_option


@click.group()
def nqm() -> None:
    """The noisy quadratic model (NQM) fitted to a network."""


def _sizes(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"{text!r}: write increasing integers, e.g. 8,16,32") from None


@nqm.command("fit")
@click.option("--problem", required=True, help="A problem with a finite data set, e.g. mnist1d_mlp.")
@click.option("--set", "sets", multiple=True, metavar="problem.PARAM=V", help="A problem hyperparameter.")
@click.option("--lr", type=float, default=0.1, show_default=True, help="SGD's lr for the checkpoint run.")
@click.option("--batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="SGD's batch size for the checkpoint run.")
@click.option("--reference-steps", type=click.IntRange(min=1), default=3000, show_default=True,
              help="Length of the reference run the checkpoint is a fraction of.")
@click.option("--checkpoint-fraction", type=float, default=0.1, show_default=True,
              help="Fit after this fraction of the reference run.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--top-k", type=int, default=20, show_default=True, help="Top Hessian eigenvalues by Lanczos.")
@click.option("--lanczos-iters", type=click.IntRange(min=2), default=None,
              help="Lanczos steps (default 2·top-k + 20).")
@click.option("--examples", type=int, default=1024, show_default=True,
              help="Training examples the curvature and the noise are measured on.")
@click.option("--batch-sizes", default=None,
              help="Batch sizes to predict at (increasing; default 8,16,...,4096 up to the training set's size).")
@click.option("--target-loss", type=float, default=None,
              help="Target: this validation loss (a measurement's --target), mapped to the NQM's risk through the "
                   "checkpoint's validation loss and the attainable one (the reference run's lowest).")
@click.option("--target-mapping", type=click.Choice(["fraction", "excess"]), default="fraction", show_default=True,
              help="How --target-loss becomes the NQM's target: the same fraction of the start's risk as of the "
                   "measured excess left; or excess: the start scaled to the measured excess, the target X − L*.")
@click.option("--target-fraction", type=float, default=None,
              help="Target instead: this fraction of the fitted NQM's risk at the checkpoint (default 0.1).")
@click.option("--quadrature-steps", type=int, default=40, show_default=True,
              help="Lanczos steps of each quadrature over the rest of the spectrum.")
@click.option("--probes", type=int, default=4, show_default=True,
              help="Random noise vectors whose quadratures give the noise over the rest of the spectrum.")
@click.option("--experiment", default=None, help="MLflow experiment (default: nqm-fit-PROBLEM).")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking URI (default: MLflow's own, sqlite:///mlflow.db here).")
@format_option
def fit(problem, sets, lr, batch_size, reference_steps, checkpoint_fraction, seed, top_k, lanczos_iters, examples,
        batch_sizes, target_loss, target_mapping, target_fraction, quadrature_steps, probes, experiment, tracking_uri,
        output_format) -> None:
    """Train PROBLEM with SGD to a checkpoint (by the suite's engine), fit the NQM there (top-k
    Hessian eigenvalues by Lanczos with the gradient and the noise along them, Lanczos quadratures
    of the gradient and of the noise over the rest of the spectrum), and predict each method's
    steps to a target against the batch size and its critical batch size (2× perfect scaling).
    Logged as an MLflow run."""
    import json

    from suite.errors import SpecError
    from suite.nqmfit.fit import FitRequest, checkpoint_spec, log_fit, table
    from suite.nqmfit.fit import fit as run_fit
    from suite.registry import get_registry
    from suite.specs.spec import parse_assignment
    from suite.tracking.tracker import Tracker

    params = {}
    for text in sets:
        family, param, value = parse_assignment(text)
        if family != "problem":
            raise SpecError(f"--set {text!r}: nqm fit takes problem hyperparameters only (problem.PARAM=V)")
        params[param] = value
    req = FitRequest(problem, params, lr=lr, batch_size=batch_size, reference_steps=reference_steps,
                     checkpoint_fraction=checkpoint_fraction, seed=seed, top_k=top_k, lanczos_iters=lanczos_iters,
                     examples=examples,
                     batch_sizes=None if batch_sizes is None else _sizes(batch_sizes), target_fraction=target_fraction,
                     target_loss=target_loss, target_mapping=target_mapping, quadrature_steps=quadrature_steps,
                     probes=probes)
    req.check()
    registry = get_registry()
    checkpoint_spec(req, registry)  # a configuration that cannot work: a one-line error before anything is logged
    tracker = Tracker(experiment or f"nqm-fit-{problem}", tracking_uri)
    runs, res = run_fit(req, registry)
    run_id = log_fit(tracker, runs, res)
    if output_format == "json":
        click.echo(json.dumps({"run_id": run_id, **res.summary()}, default=str))
        return
    n = res.nqm
    click.echo(f"NQM fitted to {problem} ({res.dim} parameters) after {req.checkpoint_steps} SGD steps "
               f"(lr {lr:g}, B={batch_size}): train loss {res.checkpoint_loss:.4g}, validation loss "
               f"{res.checkpoint_val_loss:.4g}; attainable {res.attainable_loss:.4g} (reference run's lowest)")
    click.echo(f"  top eigenvalues {', '.join(f'{v:.3g}' for v in res.eigenvalues[:5])}, …; Hutchinson trace "
               f"{res.hessian_trace:.3g}; noise tr Σ {res.noise_trace:.3g}, top-{len(res.noise)} share "
               f"{sum(res.noise) / res.noise_trace:.0%}")
    excess = res.checkpoint_val_loss - res.attainable_loss
    click.echo(f"  start risk {res.quadratic_risk:.3g} (½gᵀH⁻¹g; measured excess {excess:.3g}; "
               f"{n.top_risk_share:.0%} in the top {len(res.eigenvalues)}); left "
               f"out on non-positive curvature: {n.dropped_gradient:.0%} of |g|², {n.dropped_noise:.0%} of tr Σ")
    click.echo(f"  target: NQM risk {res.target:.3g} ({res.target / n.initial_risk:.3g} of the start's "
               f"{n.initial_risk:.3g}, mapping: {req.target_mapping}); predicted steps "
               "(each method at its best constant lr), B* = critical batch size:")
    click.echo(table(res))
    click.echo(f"MLflow: run {run_id} in experiment {tracker.experiment_name!r} at {tracker.tracking_uri}")


@nqm.command("compare")
@click.option("--fit-run", required=True, help="The run id `suite nqm fit --target-loss X` printed.")
@click.option("--experiment", required=True, help="MLflow experiment holding the measured grid (`suite run`).")
@click.option("--optimizers", default="sgd,adam", show_default=True,
              help="Measured optimizers to compare (sgd, adam, momentum), comma-separated.")
@click.option("--tracking-uri", default=None, envvar="MLFLOW_TRACKING_URI", show_envvar=True,
              help="MLflow tracking URI holding both (default: MLflow's own).")
@click.option("--average", type=click.Choice(["steps", "loss"]), default="steps", show_default=True,
              help="steps: each run's first crossings, averaged over seeds; loss: the crossings of the seeds' "
                   "mean validation loss (the expected loss the NQM predicts).")
def compare(fit_run, experiment, optimizers, average, tracking_uri) -> None:
    """Prediction against measurement: per optimizer, the fewest steps over the grid's lrs (mean
    over its seeds) from the checkpoint's validation loss to the fit's target loss at each batch
    size, the predicted steps, and both critical batch sizes (a Markdown table)."""
    from mlflow.tracking import MlflowClient

    from suite.nqmfit.compare import compare as run_compare
    from suite.nqmfit.compare import markdown
    from suite.stores import check_tracking_uri, resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    check_tracking_uri(uri, write=False)
    levels, rows = run_compare(MlflowClient(uri), fit_run, experiment,
                               [o.strip() for o in optimizers.split(",") if o.strip()], average)
    click.echo(f"{levels['problem']}: steps from validation loss {levels['start']:.4g} (the checkpoint's) to "
               f"{levels['target']:g}; measured: best lr of the grid, "
               + ("mean over seeds" if average == "steps" else "crossings of the seeds' mean loss")
               + "; B* critical batch size")
    click.echo(markdown(levels, rows, average))
