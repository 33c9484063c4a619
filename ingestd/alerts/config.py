"""The `alerts` section: rules, receivers and the evaluator's schedule (reloaded on SIGHUP).

Kept apart from `ingestd.config` (which imports this module for its root `Config`), so it
defines its own frozen base with the same settings as `ingestd.config.Section`.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Severity = Literal["INFO", "LOW", "MEDIUM", "HIGH", "CRITICAL"]
Comparison = Literal[">", ">=", "<", "<=", "==", "!="]
Aggregate = Literal["avg", "min", "max", "sum", "count", "rate", "quantile"]
SpanKind = Literal["internal", "server", "client", "producer", "consumer"]
AttributeValue = str | bool | int | float

PositiveFloat = Annotated[float, Field(gt=0)]
Quantile = Annotated[float, Field(ge=0, le=1)]
# Rule and receiver names become label values and SQL parameters; keep them plain.
Name = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")]
LabelName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]

# The fields a message template may use, e.g. "{rule}: p99 {value:.0f} ms > {threshold}".
TEMPLATE_FIELDS = {
    "rule": "HighLatency",
    "severity": "HIGH",
    "application": "app",
    "series": "name=value",
    "value": 1.5,
    "threshold": 1.0,
    "op": ">",
    "window_s": 300.0,
}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Condition(_Section):
    # Points (spans, records) newer than now - window_s are read. Prometheus' `[5m]`.
    window_s: PositiveFloat = 300.0
    op: Comparison = ">"
    threshold: float

    @model_validator(mode="after")
    def _finite(self) -> _Condition:
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold}")
        return self


class MetricCondition(_Condition):
    """An aggregate of one metric over the window, per series (name + attributes)."""

    name: str = Field(min_length=1)
    aggregate: Aggregate
    # Only for aggregate: quantile (of a histogram's buckets), 0..1.
    quantile: Quantile | None = None
    # Attribute equality filter: only points whose attributes hold these key/values.
    where: dict[str, AttributeValue] = Field(default_factory=dict)
    # series: one sample per attribute set (Prometheus' default); application: one per
    # application, all attribute sets aggregated together (the rollups can serve these).
    by: Literal["series", "application"] = "series"

    @model_validator(mode="after")
    def _quantile_iff(self) -> MetricCondition:
        if self.aggregate == "quantile" and self.quantile is None:
            raise ValueError("aggregate quantile needs quantile (0..1)")
        if self.aggregate != "quantile" and self.quantile is not None:
            raise ValueError(f"quantile is only for aggregate quantile, not {self.aggregate}")
        if self.aggregate in ("rate", "quantile") and self.by != "series":
            raise ValueError(f"aggregate {self.aggregate} is computed per series (by: series)")
        return self


class TracesCondition(_Condition):
    """Error ratio (statusCode ERROR / all spans) or a latency quantile (milliseconds)."""

    measure: Literal["error_ratio", "latency_quantile"]
    quantile: Quantile | None = None
    span_name: str | None = None
    span_kind: SpanKind | None = None

    @model_validator(mode="after")
    def _quantile_iff(self) -> TracesCondition:
        if self.measure == "latency_quantile" and self.quantile is None:
            raise ValueError("measure latency_quantile needs quantile (0..1)")
        if self.measure != "latency_quantile" and self.quantile is not None:
            raise ValueError("quantile is only for measure latency_quantile")
        return self


class LogsCondition(_Condition):
    """The number of log records (severity_number >= min_severity, text match) in the window."""

    # OTLP severity numbers: 9 INFO, 13 WARN, 17 ERROR, 21 FATAL.
    min_severity: Annotated[int, Field(ge=1, le=24)] = 17
    # Full-text match on body.text (all words, Elasticsearch `match` with operator and).
    match: str | None = None


class RuleConfig(_Section):
    """One alert rule: exactly one of metric, traces, logs."""

    name: Name
    severity: Severity
    message: str = "{rule}: {value:g} {op} {threshold:g}"
    labels: dict[LabelName, str] = Field(default_factory=dict)
    annotations: dict[LabelName, str] = Field(default_factory=dict)
    # None: evaluated per application; set: only that application's data.
    application: str | None = None
    # false: one sample over all applications; its alert has no application (null).
    per_application: bool = True
    metric: MetricCondition | None = None
    traces: TracesCondition | None = None
    logs: LogsCondition | None = None
    # The condition must hold this long before the alert fires (Prometheus `for`).
    for_s: Annotated[float, Field(ge=0)] = 0.0
    # A firing alert stays firing this long, counted from the first evaluation where its
    # condition no longer held (Prometheus' keep_firing_for).
    keep_firing_for_s: Annotated[float, Field(ge=0)] = 0.0
    # None: alerts.interval_s.
    interval_s: PositiveFloat | None = None
    # resolve: a series that stops reporting resolves (after keep_firing_for_s), as in
    # Prometheus; keep: its state is kept until data says otherwise.
    no_data: Literal["resolve", "keep"] = "resolve"
    # A receiver's name; None: alerts.default_receiver (or no notification).
    receiver: str | None = None

    @field_validator("message")
    @classmethod
    def _message(cls, text: str) -> str:
        return _template(text)

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, values: dict[str, str]) -> dict[str, str]:
        for key, text in values.items():
            try:
                _template(text)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from exc
        return values

    @model_validator(mode="after")
    def _checks(self) -> RuleConfig:
        given = [k for k in ("metric", "traces", "logs") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"needs exactly one condition of metric, traces, logs (got {given})")
        if self.application is not None and not self.per_application:
            raise ValueError("application and per_application: false exclude each other")
        return self

    @property
    def kind(self) -> Literal["metric", "traces", "logs"]:
        if self.metric is not None:
            return "metric"
        return "traces" if self.traces is not None else "logs"

    @property
    def condition(self) -> MetricCondition | TracesCondition | LogsCondition:
        found = self.metric or self.traces or self.logs
        assert found is not None
        return found


def _template(text: str) -> str:
    try:
        text.format(**TEMPLATE_FIELDS)
    except (KeyError, IndexError, ValueError, AttributeError) as exc:
        known = ", ".join(TEMPLATE_FIELDS)
        raise ValueError(f"bad template ({type(exc).__name__}: {exc}); fields: {known}") from exc
    return text


class ReceiverConfig(_Section):
    """Where notifications go: a webhook (Alertmanager's payload) or an Alertmanager."""

    name: Name
    kind: Literal["webhook", "alertmanager"] = "webhook"
    # webhook: the URL POSTed to; alertmanager: its base URL (POST <url>/api/v2/alerts).
    url: str = Field(pattern=r"^https?://")
    timeout_s: PositiveFloat = 10.0
    # Sent as `Authorization: Bearer ...` (use ${env:VAR}); masked by print-config.
    bearer_token: str | None = None


class AlertsConfig(_Section):
    """Alert rules evaluated by one replica (advisory lock) on the stored data."""

    enabled: bool = False
    # Default evaluation interval of a rule; replicas look for due rules this often or more.
    interval_s: PositiveFloat = 60.0
    # pg_try_advisory_lock key electing the evaluating replica. Bytes "ingestda".
    lock_key: int = 0x696E676573746461
    # How often each replica tries the lock, evaluates the rules that are due and delivers
    # the notifications that are due.
    tick_s: PositiveFloat = 5.0
    # Bounds each rule's queries; a slower one fails its evaluation (nothing changes).
    statement_timeout_s: PositiveFloat = 30.0
    # Shown as externalURL and in generatorURL (e.g. the Deep Eyes address).
    external_url: str = ""
    receivers: list[ReceiverConfig] = Field(default_factory=list)
    default_receiver: str | None = None
    # Failed deliveries are retried with exponential backoff up to this delay, for ever
    # (at-least-once); rows delivered are kept this long, then pruned.
    retry_initial_delay_s: PositiveFloat = 5.0
    retry_max_delay_s: PositiveFloat = 300.0
    outbox_retention_days: PositiveFloat = 7.0
    rules: list[RuleConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _references(self) -> AlertsConfig:
        problems: list[str] = []
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            problems.append(f"rules: names must be unique, repeated: {', '.join(dupes)}")
        receivers = {r.name for r in self.receivers}
        if len(receivers) != len(self.receivers):
            problems.append("receivers: names must be unique")
        if self.default_receiver is not None and self.default_receiver not in receivers:
            problems.append(f"default_receiver: no receiver named {self.default_receiver!r}")
        for i, rule in enumerate(self.rules):
            if rule.receiver is not None and rule.receiver not in receivers:
                problems.append(f"rules[{i}].receiver: no receiver named {rule.receiver!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def receiver_of(self, rule: RuleConfig) -> ReceiverConfig | None:
        name = rule.receiver or self.default_receiver
        return next((r for r in self.receivers if r.name == name), None)

    def rule_interval_s(self, rule: RuleConfig) -> float:
        return rule.interval_s or self.interval_s
