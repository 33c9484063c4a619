"""The configuration file: YAML -> `${env:...}` expansion -> a frozen, validated `Config` tree.

One `...Config` class per section of the file; every stage receives only its own section.
Every problem in a file is reported at once, each with its dotted path (`ConfigError`).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from ingestd.alerts.config import AlertsConfig
from ingestd.errors import ConfigError
from ingestd.redact import mask_secrets

_ENV_REF = re.compile(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_SECRET_KEYS = ("password", "token", "api_key", "secret")

MiB = 1024 * 1024


def _endpoint(value: str) -> str:
    host, sep, port = value.rpartition(":")
    # Port 0 asks the OS for a free port (tests); the port actually bound is logged.
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port with a port in 0..65535, got {value!r}")
    if not host:
        raise ValueError(f"host missing in {value!r} (use 0.0.0.0:{port} to listen everywhere)")
    return value


Endpoint = Annotated[str, AfterValidator(_endpoint)]
PositiveFloat = Annotated[float, Field(gt=0)]
PositiveInt = Annotated[int, Field(gt=0)]


class Section(BaseModel):
    """Base of every section: frozen, keyword-only, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TlsConfig(Section):
    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    # Oldest TLS version a client may use. Enforced on OTLP/HTTP and the admin server;
    # grpcio's server has no such setting (it allows 1.2 and 1.3), so the gRPC receiver
    # refuses any other value rather than pretend.
    min_version: Literal["1.2", "1.3"] = "1.2"
    # The files are checked this often and a changed certificate (cert-manager renewal) is
    # used for new connections without a restart; 0 reads them once at start. The
    # Collector's `reload_interval`.
    reload_interval_s: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _pair(self) -> TlsConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file must be set together")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file needs cert_file and key_file")
        return self

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None


NonNegativeFloat = Annotated[float, Field(ge=0)]


class KeepaliveServerParametersConfig(Section):
    """The Collector's `keepalive.server_parameters`, in seconds; 0 means no limit."""

    # A connection without an RPC for this long is closed (GOAWAY).
    max_connection_idle_s: NonNegativeFloat = 300.0
    # Connections are closed after this long (with GOAWAY), so clients re-balance over replicas.
    max_connection_age_s: NonNegativeFloat = 0.0
    # RPCs still running when a connection reaches its age get this long to finish.
    max_connection_age_grace_s: NonNegativeFloat = 0.0
    # The server pings an idle client this often; no answer within timeout_s closes it.
    time_s: PositiveFloat = 60.0
    timeout_s: PositiveFloat = 20.0


class KeepaliveEnforcementPolicyConfig(Section):
    """The Collector's `keepalive.enforcement_policy`: clients pinging more often are closed."""

    min_time_s: PositiveFloat = 10.0
    # Whether clients may ping while they have no RPC open.
    permit_without_stream: bool = False


class GrpcKeepaliveConfig(Section):
    server_parameters: KeepaliveServerParametersConfig = KeepaliveServerParametersConfig()
    enforcement_policy: KeepaliveEnforcementPolicyConfig = KeepaliveEnforcementPolicyConfig()


class CorsConfig(Section):
    """Cross-origin requests from browser SDKs to OTLP/HTTP (the Collector's `cors` keys)."""

    # Origins allowed to send, e.g. https://app.example.com or https://*.example.com ("*"
    # matches any run of characters); "*" alone allows every origin. Empty: CORS is off and
    # preflight OPTIONS requests are answered 405 as any other method.
    allowed_origins: list[str] = Field(default_factory=list)
    # Request headers a browser may send besides Accept, Accept-Language, Content-Type and
    # Content-Language (always allowed), e.g. Authorization or Content-Encoding; "*" any.
    allowed_headers: list[str] = Field(default_factory=list)
    # How long a browser may cache a preflight answer; 0 sends no Access-Control-Max-Age.
    max_age: Annotated[int, Field(ge=0)] = 0


class GrpcReceiverConfig(Section):
    enabled: bool = True
    endpoint: Endpoint = "0.0.0.0:4317"
    # 4 MiB is grpc's default and surprises users (collector #1494); OTLP's spec PR #782
    # recommends 64 MiB. 16 MiB holds ~30k SDK-sized spans.
    max_recv_msg_size_mib: Annotated[int, Field(ge=1, le=256)] = 16
    # Streams (RPCs) one HTTP/2 connection may have open; grpc's own default is unlimited.
    max_concurrent_streams: PositiveInt = 128
    # RPCs ingestd serves at once over all connections; beyond it an RPC is answered
    # UNAVAILABLE with RetryInfo (grpc's maximum_concurrent_rpcs answers RESOURCE_EXHAUSTED
    # without a hint, which exporters drop).
    max_concurrent_requests: PositiveInt = 256
    # A connection that has not completed its TLS handshake and sent the HTTP/2 preface and
    # SETTINGS within this is closed (grpc's server_handshake_timeout; its default is 120 s).
    handshake_timeout_s: PositiveFloat = 10.0
    keepalive: GrpcKeepaliveConfig = GrpcKeepaliveConfig()
    # Message encodings accepted besides none; grpcio decodes only gzip and deflate (no zstd).
    # A message in another one is answered UNIMPLEMENTED by grpc itself.
    compression_algorithms: tuple[Literal["gzip", "deflate"], ...] = ("gzip", "deflate")
    tls: TlsConfig = TlsConfig()

    @model_validator(mode="after")
    def _grpc_tls(self) -> GrpcReceiverConfig:
        if self.tls.min_version != "1.2":
            raise ValueError(
                "tls.min_version: grpcio's server cannot set a minimum TLS version (it accepts "
                "1.2 and 1.3); leave it at 1.2 or terminate TLS in front of ingestd"
            )
        return self


class HttpReceiverConfig(Section):
    enabled: bool = True
    endpoint: Endpoint = "0.0.0.0:4318"
    # The Collector's default is 20 MiB; we cap the compressed and the decompressed size apart
    # so that a small compressed bomb is refused without inflating it all.
    max_request_body_bytes: ByteSize = ByteSize(20 * MiB)
    max_decompressed_bytes: ByteSize = ByteSize(64 * MiB)
    # A compressed body may inflate to this many times its size (bodies inflating to 4 MiB or
    # less never count): 64 MiB of empty records gzip into 65 KB. 0 turns the check off.
    max_decompression_ratio: Annotated[int, Field(ge=0)] = 100
    # Requests served at once; beyond it a request is answered 503 + Retry-After before its
    # body is read. Each may hold max_request_body_bytes, so this also bounds memory.
    max_concurrent_requests: PositiveInt = 256
    read_header_timeout_s: PositiveFloat = 10.0
    # The whole body must arrive within this; a client trickling bytes is cut off (slowloris).
    read_body_timeout_s: PositiveFloat = 30.0
    idle_timeout_s: PositiveFloat = 60.0
    # Content-Encodings accepted besides identity; others are answered 400 before the body
    # is read. Drop one to keep its decoder (and its decompression cost) off the network.
    compression_algorithms: tuple[Literal["gzip", "deflate", "zstd"], ...] = (
        "gzip",
        "deflate",
        "zstd",
    )
    cors: CorsConfig = CorsConfig()
    tls: TlsConfig = TlsConfig()


class ReceiversConfig(Section):
    grpc: GrpcReceiverConfig = GrpcReceiverConfig()
    http: HttpReceiverConfig = HttpReceiverConfig()


class IngestConfig(Section):
    """How requests become rows, and when the client hears back."""

    # committed: answer after the rows are committed (nothing acknowledged is ever lost).
    # accepted: answer once buffered (faster; a crash loses what was buffered).
    ack: Literal["committed", "accepted"] = "committed"
    # How long a request may wait for buffer space before it is refused as Overloaded.
    enqueue_timeout_s: Annotated[float, Field(ge=0)] = 2.0
    # How long a committed-mode request waits for its rows to be stored before it is answered
    # UNAVAILABLE (the client retries; dedup keeps the retry from duplicating).
    ack_timeout_s: PositiveFloat = 30.0
    # Records stamped further in the future than this are rejected (clock skew).
    max_future_skew_s: PositiveFloat = 86400.0
    # What one request may hold, counted on the wire before it is parsed (see
    # docs/reliability.md): parsing costs ~32 bytes per message however small, so 64 MiB of
    # empty resources would take ~1 GiB and minutes of CPU. An OTLP SDK sends 1 resource and
    # 512 records; the Collector's batcher 8192 records. Past a cap: 413 / RESOURCE_EXHAUSTED.
    max_resources_per_request: PositiveInt = 16_384
    max_scopes_per_request: PositiveInt = 65_536
    # Spans, log records or metric data points. As many as a sink buffer holds
    # (sinks.*.buffer.max_items): a larger request could not be stored anyway.
    max_items_per_request: PositiveInt = 262_144
    # Explicit bounds, bucket counts or quantiles of one histogram / summary point; a point
    # over it is refused alone (partial success). SDKs default to 16 bounds and 160
    # exponential buckets.
    max_buckets_per_point: PositiveInt = 16_384
    # Requests whose body is at least this big are converted in a worker thread, so that the
    # event loop keeps serving other requests (and probes) meanwhile.
    convert_in_thread_bytes: ByteSize = ByteSize(512 * 1024)
    # Who converts requests (traces): native (the compiled ingestd_native, built from native/
    # by `make venv`), python (the reference converters) or auto (native when it imports).
    # The environment variable INGESTD_CODEC overrides it. Both give byte-identical rows.
    codec: Literal["native", "python", "auto"] = "auto"


class BatchConfig(Section):
    """When a buffered batch is flushed: whichever limit is reached first."""

    max_rows: PositiveInt = 8192
    max_bytes: ByteSize = ByteSize(8 * MiB)
    flush_interval_s: PositiveFloat = 0.2
    # Cut a batch at once when a writer is idle: light load is written without waiting for
    # flush_interval_s, heavy load still forms big batches because the writers are busy.
    # Measured (docs/reports/benchmarks-2026-11-26.md, "Fixed after profiling"): committed-ack
    # p50 at half load 321 -> 47 ms. An SDK exports at most 512 items per ack latency, so this
    # caps what one client can send.
    # Off: a batch waits for size, bytes or age (flush_interval_s).
    flush_when_idle: bool = True


class BufferConfig(Section):
    """How much one sink may hold in memory before new requests are refused."""

    max_items: PositiveInt = 262_144
    max_bytes: ByteSize = ByteSize(128 * MiB)


class RetryConfig(Section):
    """Jittered exponential backoff under a deadline, for transient sink errors."""

    initial_backoff_s: PositiveFloat = 0.1
    max_backoff_s: PositiveFloat = 5.0
    max_elapsed_s: PositiveFloat = 60.0

    @model_validator(mode="after")
    def _order(self) -> RetryConfig:
        if self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(
                f"max_backoff_s must be >= initial_backoff_s "
                f"({self.max_backoff_s} < {self.initial_backoff_s})"
            )
        return self


class PoolConfig(Section):
    min_size: Annotated[int, Field(ge=0)] = 2
    max_size: PositiveInt = 8
    connect_timeout_s: PositiveFloat = 5.0

    @model_validator(mode="after")
    def _order(self) -> PoolConfig:
        if self.max_size < self.min_size:
            raise ValueError(f"max_size must be >= min_size ({self.max_size} < {self.min_size})")
        return self


class TimescaleSinkConfig(Section):
    enabled: bool = True
    # Benchmarks only: acknowledge every batch without writing it (no database is contacted),
    # to measure the receive path alone. Data sent to a discarding sink is lost.
    discard: bool = False
    # The writers' connection. With owner_dsn set, this names a login member of ingest_role
    # (least privilege: COPY into the telemetry tables, ledger and dimension upserts only).
    dsn: str = "postgresql://ingestd@127.0.0.1:5432/deep_eyes"
    # The schema owner's connection, for `schema apply | status | maintain`, `applications`,
    # the maintenance stage (drop_chunks, partitions, run_job) and alert evaluation; read
    # through database_url.owner_dsn. Unset: that function's fallback (`dsn`, DATABASE_URL),
    # i.e. one role owns the schema and writes, as before this key existed.
    owner_dsn: str | None = None
    # The role `schema apply` creates (NOLOGIN) and grants exactly what the writers need,
    # from the one list in ingestd/schema/grants.py (docs/security.md).
    ingest_role: str = Field(default="ingestd_ingest", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    pool: PoolConfig = PoolConfig()
    # Parallel COPYs per table; more than the database's cores only adds contention.
    writers: PositiveInt = 2
    batch: BatchConfig = BatchConfig()
    buffer: BufferConfig = BufferConfig()
    retry: RetryConfig = RetryConfig()


class LogsTemplateConfig(Section):
    """The index template `ingestd schema apply` installs for the `logs-*-*` data streams."""

    # Above Elasticsearch's built-in `logs` (100) and `logs-otel` (120) templates.
    priority: Annotated[int, Field(ge=0)] = 200
    shards: PositiveInt = 1
    # 0 suits a single node (the dev stack); set 1 or more on a cluster.
    replicas: Annotated[int, Field(ge=0)] = 0
    # Fewer refreshes index faster; logs are searchable this long after they are stored.
    refresh_interval_s: PositiveInt = 5
    # Mapped fields per backing index; attributes beyond it are kept in _source, not indexed.
    total_fields_limit: PositiveInt = 5000
    # Data stream lifecycle retention; enforced by ingestd's maintenance where Elasticsearch
    # has no lifecycle service (docs/elasticsearch.md, "Retention, and the degraded mode of
    # the dev stack").
    retention_days: PositiveInt = 30
    # The maintenance fallback rolls a data stream over when its write index is this old or
    # its primary shard this big, so that retention can delete whole backing indices.
    rollover_max_age_h: PositiveInt = 24
    rollover_max_primary_shard_gb: PositiveInt = 50


class LogsRoutingConfig(Section):
    """Routing of log records to data streams by their `data_stream.*` attributes."""

    # Off: the attributes are kept as plain attributes and every record goes to
    # logs_dataset / logs_namespace.
    from_attributes: bool = True
    # fnmatch patterns (`nginx*`) a sanitized dataset (with its `.otel` suffix) / namespace must
    # match to be routed to; empty: any.
    allowed_datasets: list[str] = Field(default_factory=list)
    allowed_namespaces: list[str] = Field(default_factory=list)
    # Distinct data streams one process routes records to (each is a shard or more in the
    # cluster); records that would open more go to logs_dataset / logs_namespace.
    max_data_streams: PositiveInt = 256


class ElasticsearchSinkConfig(Section):
    enabled: bool = True
    # Benchmarks only, as sinks.timescale.discard: bulk items are dropped, never sent.
    discard: bool = False
    urls: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:9200"], min_length=1)
    username: str | None = None
    password: str | None = None
    api_key: str | None = None
    request_timeout_s: PositiveFloat = 30.0
    writers: PositiveInt = 2
    # gzip (level 1, off the event loop) shrinks a bulk ~10x; worth it when Elasticsearch is
    # across a network, a waste of CPU on the same host.
    gzip: bool = False
    # Bulk bodies are cut by their NDJSON size; 8 MiB measured best here
    # (docs/elasticsearch.md, "Measured").
    batch: BatchConfig = BatchConfig(max_rows=50_000, max_bytes=ByteSize(8 * MiB))
    buffer: BufferConfig = BufferConfig()
    retry: RetryConfig = RetryConfig()
    # Documents Elasticsearch answers 429/503 for are resent (only they) this many times
    # inside one write, with backoff, before the batch goes back to the batcher's retry.
    item_retries: Annotated[int, Field(ge=0)] = 3
    # Data stream of records that carry no data_stream.* attributes: logs-<dataset>-<namespace>.
    # The dataset gets the Collector's `.otel` suffix (logs-generic.otel-default).
    logs_dataset: str = "generic"
    logs_namespace: str = "default"
    routing: LogsRoutingConfig = LogsRoutingConfig()
    templates: LogsTemplateConfig = LogsTemplateConfig()


class SinksConfig(Section):
    timescale: TimescaleSinkConfig = TimescaleSinkConfig()
    elasticsearch: ElasticsearchSinkConfig = ElasticsearchSinkConfig()


class BreakerConfig(Section):
    """When ingestd stops asking Redis, and when it tries again."""

    # Failures of calls made one after another; calls that failed together (one stall, one
    # lost connection) count once, so a single hiccup under load does not open the breaker.
    failures_to_open: PositiveInt = 5
    # While open no call is made; then one probe call decides (half-open).
    open_s: PositiveFloat = 5.0


class RedisConfig(Section):
    enabled: bool = True
    url: str = "redis://127.0.0.1:6379/0"
    # Every Redis call is bounded by this; ingest never waits longer on one call. Loopback
    # round trips measure 0.2 ms p50 and 3 ms p99.9 idle, 11 ms p99 with 64 calls in flight on
    # 2 cores; a busy event loop also counts against it (docs/shared-state.md, "When Redis is
    # down or slow").
    timeout_ms: PositiveInt = 25
    # Every key ingestd writes starts with this: several deployments (or tests) share a Redis.
    key_prefix: str = "ingestd:"
    # Connections per process; a call waits for a free one within timeout_ms.
    max_connections: PositiveInt = 32
    breaker: BreakerConfig = BreakerConfig()


class DedupConfig(Section):
    """Cross-replica dedup of retried requests (needs Redis; the ledger backs it up)."""

    enabled: bool = True
    # How long a stored request is remembered; matches the Timescale ledger's window.
    ttl_s: PositiveInt = 900
    # A retry of a request still being stored elsewhere waits this long for its outcome, then
    # is told to retry. Below the OTLP SDKs' 10 s export timeout, so the answer arrives.
    wait_in_flight_s: Annotated[float, Field(ge=0)] = 5.0


class PressureConfig(Section):
    """Every replica publishes its buffer fill and sink health; all refuse when a sink fails."""

    enabled: bool = True
    publish_interval_s: PositiveFloat = 1.0
    # A replica not heard from for this long is gone (crashed, partitioned) and not counted.
    stale_after_s: PositiveFloat = 3.0
    # Fraction of the live replicas that must report a sink failing before every replica
    # refuses its signals. 0.5: one broken replica out of three cannot close the cluster;
    # a replica always refuses what its own view says it cannot store.
    failing_quorum: Annotated[float, Field(gt=0, le=1)] = 0.5
    # After a sink recovers, admission grows from 10 % to 100 % of requests over this time,
    # so the backlog of retrying clients does not knock it over again.
    reopen_s: Annotated[float, Field(ge=0)] = 10.0
    # Cap of the retry hint while a sink fails; the hint grows with the outage's length.
    max_retry_hint_s: PositiveFloat = 10.0

    @model_validator(mode="after")
    def _order(self) -> PressureConfig:
        if self.stale_after_s <= self.publish_interval_s:
            raise ValueError(
                f"stale_after_s must be > publish_interval_s "
                f"({self.stale_after_s} <= {self.publish_interval_s})"
            )
        return self


class TokenConfig(Section):
    """One bearer token (or its SHA-256, so the file holds no secret) and its tenant."""

    token: str | None = Field(default=None, min_length=16)
    token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    tenant: str = Field(min_length=1, max_length=128)

    @model_validator(mode="after")
    def _one_of(self) -> TokenConfig:
        if (self.token is None) == (self.token_sha256 is None):
            raise ValueError("set exactly one of token and token_sha256")
        return self


class ApplicationKeysConfig(Section):
    """Ingest keys of registered applications (table application_keys; docs/deep-eyes.md).

    A bearer token that is no configured token is looked up as an application key: the
    request is then stored under that application's id. Lookups are cached (Redis shared by
    the replicas, the database the truth); ingest never waits on the database for a key it
    checked within `max_stale_s`.
    """

    enabled: bool = False
    # How often the keys this process knows are re-checked (Redis, else the database):
    # `ingestd applications revoke` is seen by every replica within about this long.
    refresh_s: PositiveFloat = 1.0
    # How long a Redis entry stands for the database: a key revoked in the database alone
    # (by Deep Eyes) stops working within refresh_s + redis_ttl_s.
    redis_ttl_s: PositiveFloat = 5.0
    # An unknown key stays unknown this long (locally and in Redis): random keys cost no
    # database round trip each.
    unknown_ttl_s: PositiveFloat = 10.0
    # A known key that could not be re-checked for this long (Redis and the database down)
    # is refused with a retryable status: authentication never fails open.
    max_stale_s: PositiveFloat = 30.0
    # Keys (known and unknown) kept in memory; the least recently checked go first.
    max_entries: PositiveInt = 100_000


class AuthConfig(Section):
    """Optional bearer-token authentication on both receivers; a token names its tenant."""

    enabled: bool = False
    tokens: list[TokenConfig] = Field(default_factory=list)
    # A YAML file holding more tokens (`tokens: [...]`, same form); re-read on reload.
    tokens_file: Path | None = None
    application_keys: ApplicationKeysConfig = ApplicationKeysConfig()

    @model_validator(mode="after")
    def _some_tokens(self) -> AuthConfig:
        if (
            self.enabled
            and not self.tokens
            and self.tokens_file is None
            and not self.application_keys.enabled
        ):
            raise ValueError(
                "enabled without tokens, tokens_file or application_keys: every request would fail"
            )
        return self


class TenantLimitConfig(Section):
    """Ingest rate of one tenant. Unset rates are unlimited."""

    items_per_s: PositiveFloat | None = None
    bytes_per_s: ByteSize | None = None
    # Bucket size in seconds of rate: how large a burst passes after a quiet spell.
    burst_s: PositiveFloat = 2.0


class LimitsConfig(Section):
    """Per-tenant rate limits, enforced cluster-wide through Redis (locally while it is down)."""

    # Applies to every tenant without an entry in `tenants`.
    default: TenantLimitConfig = TenantLimitConfig()
    # tenant -> limits; keys left out of an entry come from `default`.
    tenants: dict[str, TenantLimitConfig] = Field(default_factory=dict)


class ReloadConfig(Section):
    """Auth tokens and limits are re-read on SIGHUP and when their files change."""

    # How often the config file and auth.tokens_file are checked for a change; 0 disables.
    poll_interval_s: Annotated[float, Field(ge=0)] = 3.0


class AdminConfig(Section):
    """The small HTTP server for probes, status and metrics."""

    # Kubelet probes and Prometheus reach it on the pod's address; outside Kubernetes bind
    # 127.0.0.1 (see docs/security.md). Not published by the OTLP Service.
    endpoint: Endpoint = "0.0.0.0:13133"
    # How often each sink and Redis are probed for /readyz.
    check_interval_s: PositiveFloat = 2.0
    # /status shows backend errors, hostnames and paths: with a token set it answers only
    # `Authorization: Bearer <token>` (401 otherwise). Give the token or its SHA-256.
    status_token: str | None = Field(default=None, min_length=16)
    status_token_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    # Ask the same token on /metrics too (Prometheus: `authorization: {credentials: ...}`).
    # /livez and /readyz stay open: kubelet probes send no token.
    metrics_need_token: bool = False
    tls: TlsConfig = TlsConfig()

    @field_validator("status_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # `status_token: ${env:INGESTD_ADMIN_TOKEN:-}` with the variable unset: no token.
        return None if value == "" else value

    @model_validator(mode="after")
    def _token(self) -> AdminConfig:
        if self.status_token is not None and self.status_token_sha256 is not None:
            raise ValueError("set at most one of status_token and status_token_sha256")
        no_token = self.status_token is None and self.status_token_sha256 is None
        if self.metrics_need_token and no_token:
            raise ValueError("metrics_need_token needs status_token or status_token_sha256")
        return self


class TelemetryConfig(Section):
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: JSON when stderr is not a terminal (containers), readable text on a terminal.
    log_format: Literal["auto", "json", "console"] = "auto"


class ShutdownConfig(Section):
    # Keep below Kubernetes' terminationGracePeriodSeconds (30 s by default) with margin.
    grace_s: PositiveFloat = 25.0


class MemoryConfig(Section):
    """Load shedding on memory: new data is refused before it is read or decoded.

    (Not under `limits`: `limits` is the per-tenant rate-limit section, re-read on reload;
    these bounds are the process's and need a restart. docs/operations.md, "Memory".)
    """

    # All batchers of the process together (each also has its own sinks.*.buffer.max_bytes,
    # 128 MiB by default, three of them). Bytes of request bodies being decoded count too.
    # 0 turns the cap off.
    max_buffered_bytes: ByteSize = ByteSize(256 * MiB)
    # Resident memory of one process (one worker) above which new requests are refused.
    # auto: 70 % of the container's memory limit (cgroup) shared among the workers; no limit
    # found means no guard. 0 turns it off.
    max_rss_mib: Annotated[int, Field(ge=0)] | Literal["auto"] = "auto"
    # RSS is read from /proc/self/statm this often (a few microseconds) by a task, which rests
    # 2 s while nothing is admitted, held or shed; a request finding an older reading reads it.
    check_interval_ms: Annotated[int, Field(ge=20, le=5000)] = 200
    # /readyz fails (component `memory` unavailable) once new requests have been refused for
    # memory this long without a break, so that traffic moves to other replicas; it passes
    # again when shedding stops. /livez is unaffected. 0 keeps readiness out of it.
    unready_after_shedding_s: Annotated[float, Field(ge=0)] = 30.0


class TableRetentionConfig(Section):
    """Time partitioning and lifetime of one time-series table (`metrics` or `traces`)."""

    # Hypertable chunk width (TimescaleDB tiers) or native partition width (postgres tier).
    chunk_interval_hours: PositiveInt
    # Chunks / partitions whose whole range is older than this are dropped.
    retention_days: PositiveInt
    # full tier only: chunks older than this are compressed (reported unavailable elsewhere).
    compress_after_days: PositiveInt


class MetricsTableConfig(TableRetentionConfig):
    # TimescaleDB's sizing rule: the active chunk with its indexes should fit in 25% of RAM.
    # A point takes ~364 B with indexes (measured: tests/bench/row_size.py), so one-day chunks
    # suit up to ~100 points/s per 16 GiB of RAM (3 GB/day); busier sites lower this (1 h at
    # 2k points/s on 32 GiB). 365 days of retention is then 365 chunks.
    chunk_interval_hours: PositiveInt = 24
    retention_days: PositiveInt = 365
    compress_after_days: PositiveInt = 30


class TracesTableConfig(TableRetentionConfig):
    # A span takes ~884 B with indexes (measured, 10 attributes and 1 event), 2.4x a point:
    # 6 h chunks hold ~1.9 GB at 100 spans/s and keep 30 days of retention at 120 chunks.
    chunk_interval_hours: PositiveInt = 6
    retention_days: PositiveInt = 30
    compress_after_days: PositiveInt = 7


class RollupsConfig(Section):
    """`metrics_hourly` and `metrics_daily`: continuous aggregates or ingestd's rollup tables."""

    # Each refresh re-aggregates buckets this far back, so points that arrive late (up to this
    # much) still reach the rollups; later ones only reach the raw table (as with TimescaleDB's
    # own refresh policies, whose start_offset this becomes).
    late_window_hours: PositiveInt = 3
    # How often the rollups are materialized. Queries stay current between refreshes: the
    # newest buckets are aggregated from the raw rows at query time (real-time aggregation).
    refresh_interval_minutes: PositiveInt = 30
    # Rollup rows outlive raw points when this is larger than schema.metrics.retention_days.
    retention_days: PositiveInt = 365


class SchemaConfig(Section):
    """What `ingestd schema apply` creates and the policies the maintenance job enforces."""

    # auto: full when TimescaleDB runs with timescaledb.license = 'timescale', apache when the
    # extension is there without it, postgres (native partitioning) when it is not installable.
    tier: Literal["auto", "full", "apache", "postgres"] = "auto"
    # Where the numbered SQL files are; empty: those shipped with ingestd (schema/postgres/).
    migrations_dir: Path | None = None
    metrics: MetricsTableConfig = MetricsTableConfig()
    traces: TracesTableConfig = TracesTableConfig()
    rollups: RollupsConfig = RollupsConfig()
    # postgres tier: partitions exist this far ahead of now. Must cover
    # ingest.max_future_skew_s, plus slack for maintenance runs that fail for a while.
    partitions_ahead_hours: PositiveInt = 48
    # How long ingestd.ledger keeps a request key (the dedup window for client retries).
    ledger_retention_s: PositiveInt = 900


class MaintenanceConfig(Section):
    """The maintenance job: retention, partitions, rollups, ledger pruning; one replica acts."""

    enabled: bool = True
    # Every replica wakes this often; the one that gets the lock works, unless another one did
    # within the interval. Rollups refresh at their own schema.rollups interval.
    interval_s: PositiveFloat = 60.0
    # pg_try_advisory_lock key (per database) that elects the one replica doing maintenance;
    # change it only to run two unrelated ingestd fleets against one database. Bytes "ingestdm".
    lock_key: int = 0x696E67657374646D
    # Bounds how long DDL (drop/attach partition, drop_chunks) waits for a lock; a waiting
    # exclusive lock blocks the writers queued behind it, so keep this short.
    lock_timeout_s: PositiveFloat = 2.0
    # Bounds each statement of a run (one rollup slice, one partition move).
    statement_timeout_s: PositiveFloat = 300.0


# The file's section is called `schema`, which shadows pydantic's deprecated `BaseModel.schema()`
# classmethod; field access works (instance values win), so only the warning is silenced.
warnings.filterwarnings(
    "ignore", message='Field name "schema" in "Config" shadows', category=UserWarning
)


class Config(Section):
    """The root of the configuration file."""

    # Processes serving the same ports (SO_REUSEPORT), each with its own pipeline, under a
    # supervisor. 1 runs everything in one process, no supervisor. auto: the container's CPU
    # quota (cgroup), else the CPUs this process may run on.
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = 1
    receivers: ReceiversConfig = ReceiversConfig()
    ingest: IngestConfig = IngestConfig()
    sinks: SinksConfig = SinksConfig()
    redis: RedisConfig = RedisConfig()
    dedup: DedupConfig = DedupConfig()
    pressure: PressureConfig = PressureConfig()
    auth: AuthConfig = AuthConfig()
    limits: LimitsConfig = LimitsConfig()
    reload: ReloadConfig = ReloadConfig()
    admin: AdminConfig = AdminConfig()
    telemetry: TelemetryConfig = TelemetryConfig()
    shutdown: ShutdownConfig = ShutdownConfig()
    memory: MemoryConfig = MemoryConfig()
    schema: SchemaConfig = SchemaConfig()  # type: ignore[assignment]  # see the note above
    maintenance: MaintenanceConfig = MaintenanceConfig()
    alerts: AlertsConfig = AlertsConfig()


def load(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    """Read, expand and validate a config file; raise ConfigError with every problem found."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from exc
    return parse(text, environ=environ, source=str(path))


def parse(text: str, *, environ: dict[str, str] | None = None, source: str = "<config>") -> Config:
    """Validate config text; see `load`."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{source}: not valid YAML: {exc}"]) from exc
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{source}: the top level must be a mapping of sections"])
    problems: list[str] = []
    expanded = _expand(raw, os.environ if environ is None else environ, (), problems)
    failed: set[str] = set()
    try:
        config: Config | None = Config.model_validate(expanded)
    except ValidationError as exc:
        problems.extend(_describe(exc))
        failed = {str(e["loc"][0]) for e in exc.errors() if e["loc"]}
        config = _without(expanded, failed)
    if config is not None:
        problems.extend(m for sections, m in _across_sections(config) if not sections & failed)
    if problems:
        raise ConfigError(problems)
    assert config is not None
    return config


def _without(raw: Any, failed: set[str]) -> Config | None:
    """*raw* validated with its failing top-level keys left out (defaults in their place), so
    the rules across sections still check the sections that are valid; None if it still fails."""
    if not isinstance(raw, dict):
        return None
    try:
        return Config.model_validate({k: v for k, v in raw.items() if k not in failed})
    except ValidationError:
        return None


def _across_sections(config: Config) -> Iterator[tuple[set[str], str]]:
    """Rules that tie keys of two sections together (each section validates itself): each
    problem with the top-level sections it reads, so that it is left out when one of those
    failed on its own (its values would be defaults)."""
    ahead_s = config.schema.partitions_ahead_hours * 3600
    if ahead_s < config.ingest.max_future_skew_s:
        # A point stamped up to max_future_skew_s ahead is accepted, so its partition must exist.
        yield (
            {"schema", "ingest"},
            f"schema.partitions_ahead_hours: must cover ingest.max_future_skew_s "
            f"({ahead_s:g} s < {config.ingest.max_future_skew_s:g} s)",
        )
    if config.auth.application_keys.enabled and not config.sinks.timescale.enabled:
        # The keys are looked up in the database the Timescale sink writes (sinks.timescale.dsn).
        yield (
            {"auth", "sinks"},
            "auth.application_keys.enabled: needs sinks.timescale.enabled (application keys"
            " live in the Timescale sink's database, sinks.timescale.dsn)",
        )
    sinks = config.sinks.timescale
    if config.alerts.enabled and (not sinks.enabled or sinks.discard):
        # The alerts table, the rules' state and most of their data are in PostgreSQL.
        yield {"alerts", "sinks"}, "alerts.enabled: needs sinks.timescale (enabled, not discard)"
    es = config.sinks.elasticsearch
    for i, rule in enumerate(config.alerts.rules):
        if config.alerts.enabled and rule.logs is not None and (not es.enabled or es.discard):
            yield (
                {"alerts", "sinks"},
                f"alerts.rules[{i}].logs: needs sinks.elasticsearch (enabled, not discard)",
            )


def _expand(node: Any, environ: Any, path: tuple[str | int, ...], problems: list[str]) -> Any:
    if isinstance(node, dict):
        return {k: _expand(v, environ, (*path, str(k)), problems) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand(v, environ, (*path, i), problems) for i, v in enumerate(node)]
    if not isinstance(node, str) or "${" not in node:
        return node

    def substitute(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in environ:
            return str(environ[name])
        if default is not None:
            return default
        problems.append(f"{_dotted(path)}: environment variable {name} is not set")
        return ""

    whole = _ENV_REF.fullmatch(node)
    value = _ENV_REF.sub(substitute, node)
    if whole:
        # A value that is only a reference takes the type its text spells (port: ${env:P}).
        try:
            typed = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            return value
        return typed if isinstance(typed, str | int | float | bool) else value
    return value


def _describe(exc: ValidationError) -> Iterator[str]:
    for error in exc.errors(include_url=False):
        loc = tuple(part for part in error["loc"] if not _is_union_tag(part))
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        yield f"{_dotted(loc) or '<root>'}: {message}"


def _is_union_tag(part: object) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def redacted(config: Config) -> dict[str, Any]:
    """The effective config as plain data, with secrets masked, for `print-config`."""
    masked: dict[str, Any] = _mask(config.model_dump(mode="json"))
    return masked


def _mask(node: Any, key: str = "") -> Any:
    if isinstance(node, dict):
        return {k: _mask(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_mask(v, key) for v in node]
    if isinstance(node, str):
        # A file's path is not its content: auth.tokens_file stays readable.
        if node and any(s in key.lower() for s in _SECRET_KEYS) and not key.endswith("_file"):
            return "***"
        # DSNs and URLs: userinfo, ?password=, libpq's `password=...` keyword form.
        return mask_secrets(node)
    return node
