"""The suite's vocabulary, defined once: MLflow tag names, Optuna study and trial attribute
names, and run statuses.

Every name here is part of what the suite records, so changing one changes how earlier runs
and studies are read back. Modules import the constants; no module spells a ``"suite.…"``
name itself.
"""

from __future__ import annotations

# -- run statuses (MLflow tag ``suite.status``, Optuna trial attribute ``suite.status``) ------
COMPLETED = "completed"
DIVERGED = "diverged"
STOPPED = "stopped"  # stopped by its caller (a pruner), not by itself
FAILED = "failed"
INTERRUPTED = "interrupted"
DONE_STATUSES = (COMPLETED, DIVERGED)  # divergence is a result: a diverged run is done

# -- MLflow tags on runs --------------------------------------------------------------------
TAG_HASH = "suite.spec_hash"  # a run's identity: the hash of its RunSpec
TAG_STATUS = "suite.status"  # one of the statuses above
TAG_REASON = "suite.reason"  # why a run stopped
TAG_KIND = "suite.kind"  # run | grid | study | trial | reeval | report
TAG_OWNER = "suite.owner"  # host:pid of the process that logs the run (finds orphans after kill -9)
TAG_VERSION = "suite.version"
TAG_TORCH = "suite.torch_version"
TAG_MLFLOW_VERSION = "suite.mlflow_version"
TAG_OPTUNA_VERSION = "suite.optuna_version"
TAG_DEVICE = "suite.device"
TAG_ENGINE = "suite.engine"  # loop | stacked: the engine that trained the run
TAG_STACK = "suite.stack"  # the stack a run was trained in (stacked engine)
TAG_UNSTABLE = "suite.unstable"  # on a stacked run whose loss grew past the exactness promise (suite.engine.exactness)
TAG_SECTION = "suite.section"  # the benchmark file's experiment
TAG_CLAIMS = "suite.claims"  # on the run a report is logged on: its summary; .NN each claim's verdict
TAG_WINNER = "suite.winner"  # ... and .<section>.b<B> each paired comparison's outcome at a batch size
TAG_BENCHMARK = "suite.benchmark"
TAG_SCHEDULER_INTERVAL = "suite.scheduler_interval"
TAG_DIST_PREFIX = "suite.dist."  # + family: the distribution that provided a component
TAG_N_SPECS = "suite.n_specs"
TAG_N_SKIPPED = "suite.n_skipped"
TAG_N_FAILED = "suite.n_failed"
TAG_SECONDS = "suite.seconds"
TRAIN_SECONDS = "train_seconds"  # metric: seconds spent training up to each evaluation, evaluations excluded
TAG_DISPATCH = "suite.dispatch"  # on a grid's parent run: how its units were run (in-process or workers) and why
TAG_NQM_FIT = "suite.nqm_fit"  # on the checkpoint run that `suite nqm fit` fits its NQM at
PHASES = ("startup", "building", "training", "optuna", "tracking", "reporting")  # where an invocation's time went
TAG_PHASE_SECONDS = {p: f"suite.seconds.{p}" for p in PHASES}  # on the parent run of `suite run` / `suite tune`
TAG_STUDY = "suite.study"  # the Optuna study a trial run belongs to
TAG_STUDY_UID = "suite.study_uid"
TAG_STUDIES = "suite.studies"
TAG_TRIAL = "suite.trial"
TAG_TRIAL_STATE = "suite.trial_state"
TAG_TRIAL_VALUE = "suite.trial_value"
TAG_REEVAL_OF = "suite.reeval_of"
TAG_SEED_INDEX = "suite.seed_index"
TAG_STUDY_INDEX = "suite.study_index"  # which of a cell's R independent studies (--studies R) a run belongs to
TAG_VARIANT = "suite.variant"
TAG_PROBLEM = "suite.problem"
TAG_BATCH_SIZE = "suite.batch_size"
TAG_BEST_TRIAL = "suite.best_trial"
TAG_REEVALUATED = "suite.reevaluated"  # on a study's parent: the trials its last invocation re-evaluated
TAG_BEST_AT_EDGE = "suite.best_at_edge"  # on a study's parent: its winner's edges (suite.tuning.edges), or "false"
EDGE_LOW = "low"  # ... as family.param@low / family.param@high, comma-separated
EDGE_HIGH = "high"
BEST_AT_EDGE_NONE = "false"
TAG_TRIALS = "suite.trials"
TAG_TRIALS_REQUESTED = "suite.trials_requested"
TAG_PRUNER = "suite.pruner"
TAG_STUDY_SEED = "suite.study_seed"
TAG_STORAGE = "suite.storage"
TAG_VALUES = "suite.values"
TAG_HOST = "suite.host"
TAG_REUSED = "suite.reused"
TAG_GRID_ID = "suite.grid_id"
TAG_TOTAL = "suite.total"
TAG_SPEC_HASHES = "suite.spec_hashes"
TAG_CONFIG = "suite.config"  # a run's configuration without its seed: MLflow's "Group by" gives mean ± std over seeds

# -- MLflow's own tags and UI state the suite writes ----------------------------------------------
MLFLOW_EXPERIMENT_KIND = "mlflow.experimentKind"  # experiment tag: what the UI shows first
EXPERIMENT_KIND_TRAINING = "custom_model_development"  # a model-training experiment: the runs table
MLFLOW_NOTE = "mlflow.note.content"  # a run's (or experiment's) description in the UI
MLFLOW_VIEW_STATE_PREFIX = "mlflow.sharedViewState."  # + key: a shared view of the runs table (experiment tag)
MLFLOW_ML_WORKFLOW = "machine_learning"  # the UI's workflowType for model training (URL parameter)

# -- Optuna study user attributes -------------------------------------------------------------
STUDY_KIND = "suite.kind"  # grid | tune: how a worker runs the study's trials
STUDY_READY = "suite.ready"  # set by the creator once every trial is enqueued
STUDY_SETTINGS = "suite.settings"
STUDY_OVERRIDES = "suite.overrides"
STUDY_UID = "suite.uid"  # identifies a study across invocations (its MLflow parent run carries it)
STUDY_REEVALS = "suite.reevals"  # {MLflow parent run: {trial: {seed: value or None (diverged)}}}: done re-evaluations
STUDY_TUNE = "suite.tune"  # trials, pruner and study seed of a tuning study
STUDY_EXPERIMENT = "suite.experiment"
STUDY_TRACKING_URI = "suite.tracking_uri"
STUDY_PARENT_RUN_ID = "suite.parent_run_id"
STUDY_GRID_ID = "suite.grid_id"

# -- Optuna trial user attributes -------------------------------------------------------------
TRIAL_KEY = "suite.key"  # what the trial stands for (a spec hash, a tuning slot)
TRIAL_WORKER = "suite.worker"  # host:pid of the worker that claimed it
TRIAL_RETRY_OF = "suite.retry_of"  # numbers of the lost trials this one retries
TRIAL_STATUS = "suite.status"  # how its run ended (set once a run has ended)
TRIAL_VALUE = "suite.value"
TRIAL_DUPLICATE_OF = "suite.duplicate_of"
TRIAL_SPEC = "suite.spec"  # a grid trial's RunSpec (JSON)
TRIAL_RUN_ID = "suite.mlflow_run_id"
TRIAL_SLOT = "suite.slot"
TRIAL_RUN_NAME = "suite.run_name"  # a grid trial's MLflow run name (named against the whole grid)
