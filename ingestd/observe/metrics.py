"""Every self-metric ingestd exports, in one place, so docs/operations.md's table can be checked.

Names follow `ingestd_<stage>_<thing>_<unit>`. Labels stay low-cardinality: signal, transport,
sink, reason, outcome; never a tenant or an application id.

With `workers: N > 1` every process writes its values to files in a per-run directory
(prometheus_client's multiprocess mode, chosen by PROMETHEUS_MULTIPROC_DIR before this module
is imported) and the supervisor's /metrics adds them up: counters and histograms are summed
over every worker that ever ran, and each gauge says how its workers' values combine
(`multiprocess_mode`: livesum, livemax, livemin or liveall, "live" meaning only running
processes count). prometheus_client's own process_* and python_* collectors are removed: they
would describe only the process answering the scrape; `ingestd.observe.process` exports the same
facts as ingestd_process_* from every process.
"""

from __future__ import annotations

import contextlib

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    REGISTRY,
    Counter,
    Gauge,
    Histogram,
)

for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    with contextlib.suppress(KeyError):  # already removed
        REGISTRY.unregister(_collector)

# -- lifecycle and health -------------------------------------------------------------------
COMPONENT_UP = Gauge(
    "ingestd_component_up",
    "1 when a component (sink, Redis, receiver) is ok or degraded, 0 otherwise",
    ["component"],
    multiprocess_mode="livemin",
)
COMPONENT_DEGRADED = Gauge(
    "ingestd_component_degraded",
    "1 while a component works with a reduced guarantee (Redis down: no dedup, local limits)",
    ["component"],
    multiprocess_mode="livemax",
)
BUILD_INFO = Gauge(
    "ingestd_build_info",
    "Always 1; the version is a label",
    ["version"],
    multiprocess_mode="livemax",
)
DRAINING = Gauge(
    "ingestd_draining",
    "1 from the first SIGTERM/SIGINT until exit (readiness fails, new requests are refused)",
    multiprocess_mode="livemax",
)

# -- workers and their supervisor (workers: N) -------------------------------------------------
WORKERS_CONFIGURED = Gauge(
    "ingestd_workers_configured",
    "Worker processes this ingestd runs (workers: N, or what auto resolved to); 1 in-process",
    multiprocess_mode="livemax",
)
WORKERS_RUNNING = Gauge(
    "ingestd_workers_running",
    "Worker processes alive right now",
    multiprocess_mode="livemax",
)
WORKER_RESTARTS = Counter(
    "ingestd_worker_restarts_total",
    "Workers started again after they exited unexpectedly, by how they ended (exit code, "
    "signal name, hung)",
    ["reason"],
)

# -- process (every worker; sampled, never per request) ---------------------------------------
PROCESS_CPU = Counter(
    "ingestd_process_cpu_seconds_total",
    "CPU time (user + system) of ingestd's processes, summed over every worker that ran",
)
PROCESS_RSS = Gauge(
    "ingestd_process_resident_memory_bytes",
    "Resident memory of each process (a pid label per worker with workers > 1)",
    multiprocess_mode="liveall",
)
PROCESS_OPEN_FDS = Gauge(
    "ingestd_process_open_fds",
    "Open file descriptors, all processes together",
    multiprocess_mode="livesum",
)
PROCESS_START_TIME = Gauge(
    "ingestd_process_start_time_seconds",
    "Unix time each process started (a pid label per worker with workers > 1)",
    multiprocess_mode="liveall",
)
PROCESS_CONNECTIONS = Gauge(
    "ingestd_process_tcp_connections",
    "Established TCP connections by peer: clients of grpc, http and admin; postgresql, "
    "elasticsearch and redis servers; other. Sampled every few seconds from the kernel",
    ["peer"],
    multiprocess_mode="livesum",
)

# -- memory guard (memory.*) ---------------------------------------------------------------------
MEMORY_HELD_BYTES = Gauge(
    "ingestd_memory_held_bytes",
    "Bytes held by all batchers of a process plus request bodies being decoded, all processes",
    multiprocess_mode="livesum",
)
MEMORY_HELD_LIMIT_BYTES = Gauge(
    "ingestd_memory_held_limit_bytes",
    "memory.max_buffered_bytes, all processes together (0: no cap)",
    multiprocess_mode="livesum",
)
MEMORY_RSS_LIMIT_BYTES = Gauge(
    "ingestd_memory_rss_limit_bytes",
    "RSS above which one process refuses new requests (memory.max_rss_mib; 0: no guard)",
    multiprocess_mode="livemax",
)
MEMORY_SHEDDING = Gauge(
    "ingestd_memory_shedding",
    "1 while a process refuses new requests for memory, by reason (rss, held_bytes)",
    ["reason"],
    multiprocess_mode="livemax",
)
MEMORY_REFUSED_REQUESTS = Counter(
    "ingestd_memory_refused_requests_total",
    "Requests refused before decoding because memory was over a limit, by reason (rss, held_bytes)",
    ["reason"],
)

# -- batcher (one per sink: metrics, traces, logs) --------------------------------------------
BATCHER_BUFFERED_ITEMS = Gauge(
    "ingestd_batcher_buffered_items",
    "Items held by a sink's batcher (buffered or being written)",
    ["sink"],
    multiprocess_mode="livesum",
)
BATCHER_BUFFERED_BYTES = Gauge(
    "ingestd_batcher_buffered_bytes",
    "Bytes held by a sink's batcher (OTLP wire size)",
    ["sink"],
    multiprocess_mode="livesum",
)
BATCHER_CAPACITY_ITEMS = Gauge(
    "ingestd_batcher_capacity_items",
    "Configured item limit of a sink's buffer (all processes together)",
    ["sink"],
    multiprocess_mode="livesum",
)
BATCHER_CAPACITY_BYTES = Gauge(
    "ingestd_batcher_capacity_bytes",
    "Configured byte limit of a sink's buffer (all processes together)",
    ["sink"],
    multiprocess_mode="livesum",
)
BATCHER_FLUSHES = Counter(
    "ingestd_batcher_flushes_total",
    "Batches cut, by trigger (size, bytes, age, idle, drain)",
    ["sink", "reason"],
)
BATCHER_REFUSED_ITEMS = Counter(
    "ingestd_batcher_refused_items_total",
    "Items refused at the buffer (buffer_full, too_large); the client was told to retry",
    ["sink", "reason"],
)
BATCHER_DROPPED_ITEMS = Counter(
    "ingestd_batcher_dropped_items_total",
    "Items given up on after buffering (retries_exhausted, rejected, shutdown, internal_error)",
    ["sink", "reason"],
)
BATCH_ROWS = Histogram(
    "ingestd_batch_items",
    "Items per written batch",
    ["sink"],
    buckets=(1, 16, 64, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536),
)
BATCH_BYTES = Histogram(
    "ingestd_batch_bytes",
    "Bytes (OTLP wire size) per written batch",
    ["sink"],
    buckets=tuple(2**k for k in range(10, 27, 2)),
)

# -- sinks --------------------------------------------------------------------------------------
SINK_WRITE_SECONDS = Histogram(
    "ingestd_sink_write_seconds",
    "Time of one write attempt of one batch, by outcome (ok, unavailable, rejected, error)",
    ["sink", "outcome"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SINK_RETRIES = Counter(
    "ingestd_sink_retries_total", "Batch write attempts retried after a transient error", ["sink"]
)

SINK_DUPLICATE_ITEMS = Counter(
    "ingestd_sink_duplicate_items_total",
    "Items not written again because the ledger already held their request (retries)",
    ["sink"],
)
SINK_REJECTED_ITEMS = Counter(
    "ingestd_sink_rejected_items_total",
    "Items the database refused for good (reported as partial success), by SQLSTATE",
    ["sink", "reason"],
)

# -- receivers and acknowledgement ---------------------------------------------------------------
RECEIVER_ACCEPTED_ITEMS = Counter(
    "ingestd_receiver_accepted_items_total",
    "Items acknowledged to clients (stored, or buffered in ack: accepted mode)",
    ["signal", "transport"],
)
RECEIVER_REFUSED_ITEMS = Counter(
    "ingestd_receiver_refused_items_total",
    "Items of requests answered with an error status, by error class",
    ["signal", "transport", "reason"],
)
RECEIVER_REFUSED_REQUESTS = Counter(
    "ingestd_receiver_refused_requests_total",
    "Requests answered with an error status, by error class (also those refused before "
    "decoding, whose items are unknown: StageClosed while draining, MemoryPressure, "
    "Unauthenticated, BadRequest, ...)",
    ["signal", "transport", "reason"],
)
RECEIVER_REJECTED_ITEMS = Counter(
    "ingestd_receiver_rejected_items_total",
    "Items refused for good inside otherwise accepted requests (OTLP partial success), by reason",
    ["signal", "reason"],
)
CONVERT_NUL_REPLACED = Counter(
    "ingestd_convert_nul_replaced_total",
    "NUL characters replaced by U+FFFD in stored text and jsonb (PostgreSQL cannot store NUL)",
    ["signal"],
)
RECEIVER_REQUESTS = Counter(
    "ingestd_receiver_requests_total",
    "Export requests by outcome status (ok, partial, or the error code sent)",
    ["signal", "transport", "status"],
)
ACK_SECONDS = Histogram(
    "ingestd_ack_latency_seconds",
    "Time from a decoded request to its answer, by outcome",
    ["signal", "transport", "outcome"],
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1, 2, 5, 10, 30),
)

# -- Elasticsearch bulk writer (the Collector's elasticsearch exporter metrics, reference O2) --
ES_BULK_REQUESTS = Counter(
    "ingestd_elasticsearch_bulk_requests_total",
    "_bulk requests by outcome (ok, partial, too_many, too_large, unavailable, client_error, "
    "connection)",
    ["outcome"],
)
ES_BULK_SECONDS = Histogram(
    "ingestd_elasticsearch_bulk_seconds",
    "Latency of one _bulk request, by outcome",
    ["outcome"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ES_DOCS = Counter(
    "ingestd_elasticsearch_docs_total",
    "Documents by outcome: stored, duplicate (409: already stored), retried (429/503 resent), "
    "rejected (refused for good)",
    ["outcome"],
)
ES_REJECTED_DOCS = Counter(
    "ingestd_elasticsearch_rejected_docs_total",
    "Documents Elasticsearch refused for good, by its error.type",
    ["error_type"],
)
ES_BULK_BYTES = Counter(
    "ingestd_elasticsearch_bulk_bytes_total",
    "_bulk body bytes: uncompressed (NDJSON) and sent (after optional gzip)",
    ["kind"],
)

# -- maintenance job (one replica acts per interval) --------------------------------------------
MAINTENANCE_RUNS = Counter(
    "ingestd_maintenance_runs_total",
    "Maintenance runs by outcome (ok, error, or skipped: locked, recent, no_schema)",
    ["outcome"],
)
MAINTENANCE_RUN_SECONDS = Histogram(
    "ingestd_maintenance_run_seconds",
    "Duration of maintenance runs that acted",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
MAINTENANCE_DROPPED_CHUNKS = Counter(
    "ingestd_maintenance_dropped_chunks_total",
    "Chunks (apache tier, drop_chunks) or partitions (postgres tier) dropped past retention",
    ["table", "kind"],
)
MAINTENANCE_CREATED_PARTITIONS = Counter(
    "ingestd_maintenance_created_partitions_total",
    "Partitions created ahead of time or for rows found in the DEFAULT partition (postgres tier)",
    ["table"],
)
MAINTENANCE_ROLLUP_ROWS = Counter(
    "ingestd_maintenance_rollup_rows_total",
    "Rollup rows inserted or changed by refreshes (apache and postgres tiers)",
    ["rollup"],
)
MAINTENANCE_LEDGER_PRUNED = Counter(
    "ingestd_maintenance_ledger_pruned_rows_total",
    "Request keys deleted from ingestd.ledger after the dedup window",
)
MAINTENANCE_ERRORS = Counter(
    "ingestd_maintenance_errors_total",
    "Failed maintenance steps (ledger, retention, partitions, rollups, timescaledb_jobs, run)",
    ["step"],
)
MAINTENANCE_ES_ROLLED = Counter(
    "ingestd_maintenance_es_rollovers_total",
    "Logs data streams rolled over by ingestd (where Elasticsearch has no lifecycle module)",
)
MAINTENANCE_ES_DELETED = Counter(
    "ingestd_maintenance_es_deleted_indices_total",
    "Logs backing indices deleted past retention by ingestd (no lifecycle module)",
)
MAINTENANCE_LAST_SUCCESS = Gauge(
    "ingestd_maintenance_last_success_timestamp_seconds",
    "Unix time of this process's last maintenance run that acted without errors",
    multiprocess_mode="livemax",
)
TIMESCALEDB_JOBS_FAILING = Gauge(
    "ingestd_timescaledb_jobs_failing",
    "Full tier: TimescaleDB policy jobs whose last run failed or that are overdue (as of the"
    " last maintenance run)",
    multiprocess_mode="livemax",
)
TIMESCALEDB_JOBS_RUN = Counter(
    "ingestd_timescaledb_jobs_run_total",
    "Full tier: TimescaleDB policy jobs the maintenance job ran itself (CALL run_job)",
)

# -- alert rules (ingestd.alerts; one replica evaluates) ---------------------------------------
ALERTS_EVALUATIONS = Counter(
    "ingestd_alerts_evaluations_total",
    "Rule evaluations by outcome (ok; error: its data or the database could not be read)",
    ["outcome"],
)
ALERTS_EVALUATION_SECONDS = Histogram(
    "ingestd_alerts_evaluation_seconds",
    "Duration of one rule's evaluation (query, state, alerts rows, outbox; one transaction)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ALERTS_EVALUATION_FAILURES = Counter(
    "ingestd_alerts_evaluation_failures_total",
    "Failed rule evaluations by the source that failed (postgres, elasticsearch, other)",
    ["source"],
)
ALERTS_TRANSITIONS = Counter(
    "ingestd_alerts_transitions_total",
    "Alert transitions written to the alerts table (firing, resolved)",
    ["transition"],
)
ALERTS_FIRING = Gauge(
    "ingestd_alerts_firing",
    "Series firing after the last evaluation pass of the evaluating replica",
    multiprocess_mode="livemax",
)
ALERTS_NOTIFICATIONS = Counter(
    "ingestd_alerts_notifications_total",
    "Notification deliveries from the outbox by outcome (sent, failed: retried later)",
    ["outcome"],
)

# -- shared state (Redis): calls, breaker, dedup, pressure, limits, auth ------------------------
REDIS_CALLS = Counter(
    "ingestd_redis_calls_total",
    "Redis calls by operation and outcome (ok, timeout, error, breaker_open)",
    ["op", "outcome"],
)
REDIS_CALL_SECONDS = Histogram(
    "ingestd_redis_call_seconds",
    "Time of one Redis call that answered, by operation",
    ["op"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1),
)
REDIS_BREAKER_OPEN = Gauge(
    "ingestd_redis_breaker_open",
    "1 while the Redis circuit breaker is open (no calls made)",
    multiprocess_mode="livemax",
)
REDIS_DEGRADED_SECONDS = Counter(
    "ingestd_redis_degraded_seconds_total",
    "Seconds spent with the Redis breaker open or half-open (dedup off, limits local)",
)
DEDUP_REQUESTS = Counter(
    "ingestd_dedup_requests_total",
    "Requests by dedup outcome: Redis (new, done, waited_done, taken_over, in_flight_timeout, "
    "skipped) or joined (an identical request buffered in this process)",
    ["outcome"],
)
DEDUP_WAIT_SECONDS = Histogram(
    "ingestd_dedup_wait_seconds",
    "Time a retry waited for the outcome of the same request in flight elsewhere",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PRESSURE_REFUSED_REQUESTS = Counter(
    "ingestd_pressure_refused_requests_total",
    "Requests refused at admission (sink_failing, reopening)",
    ["signal", "reason"],
)
PRESSURE_SIGNAL_CLOSED = Gauge(
    "ingestd_pressure_signal_closed",
    "1 while a signal is refused because its sink fails (here or on a quorum of replicas)",
    ["signal"],
    multiprocess_mode="livemax",
)
PRESSURE_REPLICAS = Gauge(
    "ingestd_pressure_replicas",
    "Live replicas (each worker is one) in the last cluster view (1 without Redis)",
    multiprocess_mode="livemax",
)
PRESSURE_MALFORMED_ENTRIES = Counter(
    "ingestd_pressure_malformed_entries_total",
    "Entries of the shared pressure hash in Redis that were not of ingestd's shape (ignored)",
)
RATELIMIT_REQUESTS = Counter(
    "ingestd_ratelimit_requests_total",
    "Rate-limited requests by scope (cluster, local) and outcome (allowed, limited)",
    ["scope", "outcome"],
)
RATELIMIT_LIMITED_ITEMS = Counter(
    "ingestd_ratelimit_limited_items_total", "Items of requests refused as over a tenant limit"
)
APPLICATION_ITEMS = Counter(
    "ingestd_application_accepted_items_total",
    "Items accepted, by registered application (its id; 'derived' without an ingest key,"
    " 'other' past 100 applications)",
    ["application", "signal"],
)
APPLICATION_KEY_CHECKS = Counter(
    "ingestd_application_key_checks_total",
    "Application key lookups by where they were answered (memory, memory_unknown, redis,"
    " database, failed)",
    ["source"],
)
AUTH_FAILURES = Counter(
    "ingestd_auth_failures_total",
    "Requests refused as unauthenticated, by reason (missing, scheme, unknown)",
    ["reason"],
)
CONFIG_RELOADS = Counter(
    "ingestd_config_reloads_total",
    "Reloads of tokens and limits by outcome (applied, unchanged, failed)",
    ["outcome"],
)
