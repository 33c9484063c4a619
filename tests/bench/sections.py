"""The benchmark's sections: each starts its subject, drives load, and returns plain numbers.

Every section writes its result into `Bench.results[<section>]`; a section that cannot run here
(peers not installed) records `{"skipped": "<why>"}` instead.
Measurement windows follow one pattern (`Bench.drive`): clients start together, the first
`warmup_s` are not measured, and over the next `duration_s` the stored count, the subject's CPU
seconds and its RSS peaks are read at both ends of the window.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from tests.bench import baselines, idle_cost, parse_memory, peers, stores
from tests.bench.load import (
    ClientPool,
    ClientResult,
    RunSpec,
    acked_items,
    answered_requests,
    latency_percentiles,
)
from tests.bench.payloads import ITEMS_PER_REQUEST
from tests.bench.profile import Sampler
from tests.bench.subjects import (
    Collector,
    Ingestd,
    Meter,
    MiB,
    Ports,
    batch_histogram,
    batch_sizes,
    histogram,
    ingestd_config,
    running_ingestd,
    write_times,
)
from tests.harness import free_port

SIGNALS = ("traces", "metrics", "logs")
SECTIONS = (
    "throughput",
    "baselines",
    "receive",
    "latency",
    "memory",
    "workers",
    "parse_memory",
    "telemetrygen",
    "collector",
)
PEER_SECTIONS = ("telemetrygen", "collector")
SINK_NAME = {"traces": "traces", "metrics": "metrics", "logs": "logs"}
UNIT = {"traces": "spans", "metrics": "points", "logs": "docs"}
# ingestd's defaults the baselines mirror (ingestd/config.py).
TIMESCALE_WRITERS = 2
ROWS_PER_COPY = 8192
ES_WRITERS = 2
BULK_BYTES = 8 * MiB
FLUSH_INTERVAL_S = 0.2


@dataclass
class Options:
    signals: tuple[str, ...]
    sections: tuple[str, ...]
    duration_s: float
    warmup_s: float
    clients: int
    inflight: int
    mode: str
    rate: float
    transport: dict[str, str]
    peers: bool
    build_peers: bool
    receive_rate: float
    telemetrygen_rate: float
    memory_settle_s: float
    # Fractions of the measured maximum the latency runs offer.
    loads: tuple[float, ...]
    templates: int
    quick: bool
    profile: bool = False
    repeat: int = 1
    # None: ingestd's default; True/False: sinks.*.batch.flush_when_idle set so.
    flush_when_idle: bool | None = None


@dataclass
class Stack:
    pg_dsn: str
    pg_admin_dsn: str
    es_url: str
    redis_url: str


@dataclass
class Window:
    """What one measured run produced."""

    t0: float
    t1: float
    stored: int | None
    cpu_s: float
    peak_rss: int
    peak_rss_per_process: int
    processes: int
    results: list[ClientResult]

    @property
    def seconds(self) -> float:
        return max(1e-6, self.t1 - self.t0)

    @property
    def acked(self) -> int:
        return acked_items(self.results, self.t0, self.t1)

    def items(self) -> int:
        return self.stored if self.stored is not None else self.acked

    @property
    def answered(self) -> int:
        return answered_requests(self.results, self.t0, self.t1)

    def summary(self) -> dict[str, Any]:
        items = self.items()
        out: dict[str, Any] = {
            "items_per_s": items / self.seconds,
            "acked_per_s": self.acked / self.seconds,
            "cpu_s_per_million": self.cpu_s / max(1, items) * 1e6,
            "cores": self.cpu_s / self.seconds,
            # The subject's CPU over the window per request answered in it (ok or failed).
            "cpu_ms_per_request": self.cpu_s / max(1, self.answered) * 1e3,
            "answered_requests": self.answered,
            "peak_rss_mib": self.peak_rss / MiB,
            "peak_rss_per_process_mib": self.peak_rss_per_process / MiB,
            "processes": self.processes,
            "window_s": self.seconds,
            "ok_requests": sum(r.ok_requests for r in self.results),
            "failed_requests": sum(r.failed_requests for r in self.results),
            "client_cores": sum(r.cpu_s for r in self.results) / self.seconds,
        }
        if self.stored is not None:
            out["stored_per_s"] = items / self.seconds
        errors: dict[str, int] = {}
        for r in self.results:
            for name, n in r.errors.items():
                errors[name] = errors.get(name, 0) + n
        if errors:
            out["errors"] = errors
        return out


@dataclass
class Bench:
    options: Options
    stack: Stack
    workdir: Path
    run_id: str
    pool: ClientPool
    results: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        # Per run: other sessions benchmark against the same Elasticsearch at the same time, and
        # with one shared namespace each run counted, and emptied, the others' data streams.
        self.namespace = f"ingestdbench{self.run_id}"
        self.redis_prefix = f"bench{self.run_id}:"
        self.dbs = stores.Databases(self.stack.pg_admin_dsn, self.stack.pg_dsn)
        self.streams = stores.LogStreams(self.stack.es_url, self.namespace)
        self._ingestd_db: str | None = None
        self._max: dict[str, float] = {}

    # -- plumbing --------------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(Exception):
            for dataset in ("benchingestd", "benchraw", "benchcollector"):
                self.streams.drop(dataset)
        self.streams.close()
        self.dbs.drop_all()

    def ingestd_db(self) -> str:
        if self._ingestd_db is None:
            self._ingestd_db = self.dbs.create("ingestd")
            self.streams.apply_templates()
        return self._ingestd_db

    def config(self, **overrides: Any) -> dict[str, Any]:
        overrides.setdefault("flush_when_idle", self.options.flush_when_idle)
        return ingestd_config(
            Ports.pick(),
            pg_dsn=self.ingestd_db(),
            es_url=self.stack.es_url,
            redis_url=self.stack.redis_url,
            redis_prefix=self.redis_prefix,
            es_namespace=self.namespace,
            **overrides,
        )

    def subject_dir(self, name: str) -> Path:
        return self.workdir / name

    def specs(
        self,
        signal: str,
        target: str,
        *,
        mode: str = "max",
        rate: float = 0.0,
        transport: str | None = None,
        dataset: str = "benchingestd",
        clients: int | None = None,
    ) -> list[RunSpec]:
        n = clients or self.options.clients
        return [
            RunSpec(
                signal=signal,
                target=target,
                transport=transport or self.options.transport[signal],
                mode=mode,
                duration_s=self.options.warmup_s + self.options.duration_s,
                inflight=self.options.inflight,
                rate=rate / n,
                phase=i / n,
                dataset=dataset if signal == "logs" else "",
                namespace=self.namespace if signal == "logs" else "",
                templates=self.options.templates,
            )
            for i in range(n)
        ]

    def drive(
        self,
        specs: list[RunSpec],
        meter: Meter | None,
        counter: Callable[[], tuple[int, float]] | None = None,
        profile: str = "",
    ) -> Window:
        """Run *specs* on the client pool; measure the window after the warm-up.

        With --profile and a *profile* label, py-spy samples the subject over the window.
        """
        pool = self.pool
        pool.prepare(specs)
        start = pool.go()
        _sleep_until(start + self.options.warmup_s)
        sampler = None
        if profile and self.options.profile and meter is not None:
            raw = self.workdir / f"profile-{profile}.txt"
            sampler = Sampler(meter.root.pid, self.options.duration_s, raw)
        c0, t0 = counter() if counter else (0, time.time())
        cpu0 = meter.cpu_s() if meter else 0.0
        if meter:
            meter.reset_peaks()
        _sleep_until(start + self.options.warmup_s + self.options.duration_s)
        c1, t1 = counter() if counter else (0, time.time())
        cpu1 = meter.cpu_s() if meter else 0.0
        peak = (meter.peak_total, meter.peak_per_process, meter.workers()) if meter else (0, 0, 0)
        results = pool.collect(timeout_s=120)
        if sampler is not None:
            self.results.setdefault("profiles", {})[profile] = sampler.summary()
        return Window(
            t0=t0,
            t1=t1,
            stored=(c1 - c0) if counter else None,
            cpu_s=cpu1 - cpu0,
            peak_rss=peak[0],
            peak_rss_per_process=peak[1],
            processes=peak[2],
            results=results,
        )

    def counter(
        self, signal: str, dataset: str = "benchingestd"
    ) -> Callable[[], tuple[int, float]]:
        if signal == "logs":
            return lambda: self.streams.count(dataset)
        dsn = self.ingestd_db()
        return lambda: stores.count_rows(dsn, signal)


def _sleep_until(when: float) -> None:
    time.sleep(max(0.0, when - time.time()))


def skipped(why: str) -> dict[str, str]:
    return {"skipped": why}


# -- throughput: ingestd end to end, per signal ---------------------------------------------------


def throughput(bench: Bench) -> None:
    """Max throughput per signal into the real sinks, counted in the sinks."""
    out: dict[str, Any] = {}
    with running_ingestd(bench.config(), bench.subject_dir("ingestd-e2e")) as subject:
        for signal in bench.options.signals:
            out[signal] = _e2e_max(bench, subject, signal)
            bench._max[signal] = out[signal]["stored_per_s"]
    bench.results["throughput"] = out


def _e2e_max(bench: Bench, subject: Ingestd, signal: str) -> dict[str, Any]:
    counter = bench.counter(signal)
    before_count, _ = counter()
    hist0 = batch_histogram(subject.metrics_text(), SINK_NAME[signal])
    specs = bench.specs(signal, subject.target(bench.options.transport[signal]))
    sink = _SinkProbe(bench, subject, signal, counter)
    window = bench.drive(specs, subject.meter, sink.count, profile=f"e2e-{signal}")
    time.sleep(0.5)
    after_count, _ = counter()
    hist1 = batch_histogram(subject.metrics_text(), SINK_NAME[signal])
    acked_total = sum(r.ok_items for r in window.results)
    result = window.summary()
    result.update(
        transport=bench.options.transport[signal],
        clients=len(specs),
        inflight=bench.options.inflight,
        batch=batch_sizes(hist0, hist1),
        sink=sink.summary(),
        exact={
            "acked_items": acked_total,
            "stored_items": after_count - before_count,
            "stored_equals_acked": after_count - before_count == acked_total,
        },
    )
    return result


class _SinkProbe:
    """The measured window seen from the sink's side: the database server processes' CPU per
    1,000 stored rows, the machine's idle CPU, and how busy ingestd's writers were (the sum
    of `ingestd_sink_write_seconds` over writers x seconds: below 1, a writer waited for a
    batch). Samples taken when `drive` counts rows at the window's start and end."""

    def __init__(
        self, bench: Bench, subject: Ingestd, signal: str, counter: Callable[[], tuple[int, float]]
    ) -> None:
        self._bench, self._subject, self._signal, self._counter = bench, subject, signal, counter
        self._samples: list[
            tuple[int, float, dict[int, tuple[float, float]], float, dict[str, float]]
        ] = []

    def count(self) -> tuple[int, float]:
        server = (
            stores.server_cpu(self._bench.stack.pg_admin_dsn, self._bench.ingestd_db())
            if self._signal != "logs"
            else {}
        )
        idle = psutil.cpu_times().idle
        writes = histogram(
            self._subject.metrics_text(), "ingestd_sink_write_seconds", {"sink": self._signal}
        )
        rows, at = self._counter()
        self._samples.append((rows, at, server, idle, writes))
        return rows, at

    def summary(self) -> dict[str, float]:
        if len(self._samples) < 2:
            return {}
        (r0, t0, s0, i0, w0), (r1, t1, s1, i1, w1) = self._samples[-2:]
        seconds, rows = max(1e-6, t1 - t0), max(1, r1 - r0)
        batches = max(1.0, w1.get("count", 0.0) - w0.get("count", 0.0))
        writing = w1.get("sum", 0.0) - w0.get("sum", 0.0)
        out = {
            "machine_idle_cores": (i1 - i0) / seconds,
            "writer_busy": writing / (TIMESCALE_WRITERS * seconds),
            "write_ms_per_batch": writing / batches * 1e3,
        }
        if s0:
            server = stores.cpu_between(s0, s1)
            out["server_cores"] = server / seconds
            out["server_cpu_ms_per_1000_rows"] = server / rows * 1e6
            out["server_runqueue_cores"] = stores.cpu_between(s0, s1, 1) / seconds
        return out


def check_duplicates(bench: Bench) -> dict[str, Any]:
    """Rows vs distinct item ids in ingestd's tables at the end (every id is unique)."""
    if bench._ingestd_db is None:
        return {}
    out = {}
    for table in ("traces", "metrics"):
        rows, distinct = stores.distinct_ids(bench._ingestd_db, table)
        out[table] = {"rows": rows, "distinct_ids": distinct, "no_duplicates": rows == distinct}
    return out


# -- baselines: the sinks' own limits ------------------------------------------------------------


def baseline_runs(bench: Bench) -> None:
    out: dict[str, Any] = {}
    for signal in bench.options.signals:
        out[signal] = _raw_bulk(bench) if signal == "logs" else _raw_copy(bench, signal)
    bench.results["baselines"] = out


def _raw_copy(bench: Bench, signal: str) -> dict[str, Any]:
    dsn = bench.dbs.create(f"raw{signal}")
    requests = 8 if bench.options.quick else 32
    total_s = bench.options.warmup_s + bench.options.duration_s
    args = [(i, signal, dsn, requests, ROWS_PER_COPY, total_s) for i in range(TIMESCALE_WRITERS)]
    start, results, procs = baselines.run_writers(baselines.copy_writer, args)
    _sleep_until(start + bench.options.warmup_s)
    s0, i0 = stores.server_cpu(bench.stack.pg_admin_dsn, dsn), psutil.cpu_times().idle
    c0, t0 = stores.count_rows(dsn, signal)
    _sleep_until(start + total_s)
    s1, i1 = stores.server_cpu(bench.stack.pg_admin_dsn, dsn), psutil.cpu_times().idle
    c1, t1 = stores.count_rows(dsn, signal)
    done = baselines.collect(results, procs, timeout_s=120)
    out: dict[str, Any] = {
        "rows_per_s": (c1 - c0) / (t1 - t0),
        "writers": TIMESCALE_WRITERS,
        "rows_per_copy": ROWS_PER_COPY,
        "client_cores": sum(d["cpu_s"] for d in done) / total_s,
        "window_s": t1 - t0,
        "machine_idle_cores": (i1 - i0) / (t1 - t0),
    }
    if not s0 or s0.keys() - s1.keys():
        # The writers finished inside the window (a quick run's few prepared rows): their
        # server processes' CPU is gone with them, so it is not measured rather than 0.
        out["server_note"] = "raw COPY sessions ended inside the window: not measured"
        return out
    server = stores.cpu_between(s0, s1)
    out["server_cores"] = server / (t1 - t0)
    out["server_cpu_ms_per_1000_rows"] = server / max(1, c1 - c0) * 1e6
    out["server_runqueue_cores"] = stores.cpu_between(s0, s1, 1) / (t1 - t0)
    return out


def _raw_bulk(bench: Bench) -> dict[str, Any]:
    bench.ingestd_db()  # templates
    dataset = "benchraw"
    bench.streams.empty(dataset)
    requests = 8 if bench.options.quick else 32
    total_s = bench.options.warmup_s + bench.options.duration_s
    args = [
        (i, bench.stack.es_url, dataset, bench.namespace, requests, BULK_BYTES, total_s)
        for i in range(ES_WRITERS)
    ]
    start, results, procs = baselines.run_writers(baselines.bulk_writer, args)
    _sleep_until(start + bench.options.warmup_s)
    c0, t0 = bench.streams.count(dataset)
    _sleep_until(start + total_s)
    c1, t1 = bench.streams.count(dataset)
    done = baselines.collect(results, procs, timeout_s=120)
    bench.streams.empty(dataset)
    return {
        "docs_per_s": (c1 - c0) / (t1 - t0),
        "writers": ES_WRITERS,
        "bulk_mib": BULK_BYTES / MiB,
        "rejected": sum(d["rejected"] for d in done),
        "client_cores": sum(d["cpu_s"] for d in done) / total_s,
        "window_s": t1 - t0,
    }


# -- receive path: sinks that discard ------------------------------------------------------------


def receive(bench: Bench) -> None:
    out: dict[str, Any] = {}
    with running_ingestd(bench.config(discard=True), bench.subject_dir("ingestd-discard")) as s:
        bench.results["idle"] = idle_cost.before_load(s.meter, quick=bench.options.quick)
        for signal in bench.options.signals:
            specs = bench.specs(signal, s.target(bench.options.transport[signal]))
            out[f"{signal}_max"] = bench.drive(
                specs, s.meter, profile=f"receive-{signal}"
            ).summary()
        rate = bench.options.receive_rate
        specs = bench.specs("traces", s.target("grpc"), mode="rate", rate=rate, transport="grpc")
        at_rate = bench.drive(specs, s.meter, profile="receive-traces-at-rate").summary()
        at_rate["offered_per_s"] = rate
        out["traces_at_rate"] = at_rate
    bench.results["receive"] = out


# -- latency: fixed offered rates ---------------------------------------------------------------


def latency(bench: Bench) -> None:
    out: dict[str, Any] = {}
    with running_ingestd(bench.config(), bench.subject_dir("ingestd-latency")) as subject:
        for signal in bench.options.signals:
            top = _max_of(bench, subject, signal)
            out[signal] = {"committed": _latency_runs(bench, subject, signal, top)}
    # `ack: accepted` for every signal (issue 16: p99 <= 20 ms at 50 % load, all three), at the
    # same offered rates as the committed runs.
    config = bench.config(ack="accepted")
    with running_ingestd(config, bench.subject_dir("ingestd-accepted")) as subject:
        for signal in bench.options.signals:
            out[signal]["accepted"] = _latency_runs(bench, subject, signal, bench._max[signal])
    bench.results["latency"] = out


def _max_of(bench: Bench, subject: Ingestd, signal: str) -> float:
    if bench.options.mode == "rate" and bench.options.rate:
        bench._max[signal] = bench.options.rate
    if signal not in bench._max:
        bench.notes.append(f"latency: {signal} maximum measured inside the latency section")
        bench._max[signal] = _e2e_max(bench, subject, signal)["stored_per_s"]
    return bench._max[signal]


# Requests per client a latency run sends inside its window, at the least.
_LATENCY_MIN_REQUESTS = 4


def _latency_runs(bench: Bench, subject: Ingestd, signal: str, top: float) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    # At least a few requests per client inside the window, however low the maximum came out
    # (a quick run on a busy machine): a latency with no samples says nothing.
    floor = _LATENCY_MIN_REQUESTS * ITEMS_PER_REQUEST * bench.options.clients
    floor /= bench.options.duration_s
    for load in bench.options.loads:
        rate = top * load
        if rate < floor:
            bench.notes.append(
                f"latency: {signal} {load:.0%} raised from {rate:,.0f} to {floor:,.0f}/s"
            )
            rate = floor
        target = subject.target(bench.options.transport[signal])
        writes = {"sink": SINK_NAME[signal], "outcome": "ok"}
        before = histogram(subject.metrics_text(), "ingestd_sink_write_seconds", writes)
        batches0 = batch_histogram(subject.metrics_text(), SINK_NAME[signal])
        window = bench.drive(bench.specs(signal, target, mode="rate", rate=rate), subject.meter)
        after = histogram(subject.metrics_text(), "ingestd_sink_write_seconds", writes)
        batches1 = batch_histogram(subject.metrics_text(), SINK_NAME[signal])
        lat = latency_percentiles(window.results, window.t0, window.t1)
        runs[f"{round(load * 100)}%"] = {
            "offered_per_s": rate,
            "acked_per_s": window.acked / window.seconds,
            **lat,
            "max_outstanding": max(r.max_outstanding for r in window.results),
            # Where the time goes: the sink's write time and the batches it wrote (whole run).
            "sink_write": write_times(before, after),
            "batch": batch_sizes(batches0, batches1),
            "cores": window.cpu_s / window.seconds,
        }
    return runs


# -- memory: RSS at 10k spans/s, and after --------------------------------------------------------


def memory(bench: Bench) -> None:
    rate = bench.options.receive_rate
    with running_ingestd(bench.config(), bench.subject_dir("ingestd-memory")) as subject:
        time.sleep(2.0)
        idle = _settled_rss(subject.meter)
        specs = bench.specs(
            "traces", subject.target("grpc"), mode="rate", rate=rate, transport="grpc"
        )
        window = bench.drive(specs, subject.meter, bench.counter("traces"))
        time.sleep(bench.options.memory_settle_s)
        after = _settled_rss(subject.meter)
        trims = [e for e in subject.process.events if e.get("event") == "memory_trimmed"]
    per_worker_idle = idle[1]
    bench.results["memory"] = {
        "offered_spans_per_s": rate,
        "stored_spans_per_s": window.items() / window.seconds,
        "workers": window.processes,
        "idle_rss_mib": idle[0] / MiB,
        "idle_rss_per_worker_mib": per_worker_idle / MiB,
        "peak_rss_mib": window.peak_rss / MiB,
        "peak_rss_per_worker_mib": window.peak_rss_per_process / MiB,
        "after_rss_mib": after[0] / MiB,
        "after_settle_s": bench.options.memory_settle_s,
        "after_over_idle": after[0] / max(1, idle[0]),
        # malloc_trim when the process went idle: (RSS before, after) in MiB
        "idle_trims_mib": [(e["rss_before_bytes"] / MiB, e["rss_bytes"] / MiB) for e in trims],
    }


def _settled_rss(meter: Meter) -> tuple[int, int]:
    samples = []
    for _ in range(5):
        total, sizes = meter.rss()
        samples.append((total, max(sizes or [0])))
        time.sleep(0.2)
    samples.sort()
    return samples[len(samples) // 2]


# -- parse memory: peak RSS growth per large request, both codecs -------------------------------


def parse_memory_section(bench: Bench) -> None:
    """Peak RSS growth while one request of several MiB is parsed and converted, over its
    decompressed size: each signal with each codec, each case in a fresh subprocess
    (`parse_memory.py`, ~1 s a case). No server; every codec whatever the run's."""
    bench.results["parse_memory"] = parse_memory.measure(signals=bench.options.signals)


# -- workers: 2 processes vs 1 on the receive path -------------------------------------------------


# Client processes of the workers comparison: enough connections for both workers to get some.
WORKERS_CLIENTS = 4


def workers(bench: Bench) -> None:
    out: dict[str, Any] = {}
    clients = max(bench.options.clients, WORKERS_CLIENTS)
    for n in (1, 2):
        config = bench.config(discard=True, workers=n)
        with running_ingestd(config, bench.subject_dir(f"ingestd-workers{n}")) as subject:
            specs = bench.specs("traces", subject.target("grpc"), transport="grpc", clients=clients)
            out[f"workers_{n}"] = bench.drive(specs, subject.meter).summary()
    one, two = out["workers_1"]["items_per_s"], out["workers_2"]["items_per_s"]
    out["ratio"] = two / one if one else 0.0
    bench.results["workers"] = out


# -- peers --------------------------------------------------------------------------------------


def _peer(bench: Bench, make: Callable[..., peers.Peer]) -> peers.Peer | str:
    if not bench.options.peers:
        return "--no-peers"
    try:
        return make(build=bench.options.build_peers)
    except peers.PeerUnavailable as exc:
        return str(exc)


def telemetrygen(bench: Bench) -> None:
    peer = _peer(bench, peers.telemetrygen)
    if isinstance(peer, str):
        bench.results["telemetrygen"] = skipped(peer)
        return
    rate = bench.options.telemetrygen_rate
    workers_n = 4
    # Each trace is a root span and one child; --rate is traces/s per worker.
    traces_per_worker = rate / 2 / workers_n
    seconds = round(bench.options.warmup_s + bench.options.duration_s)
    dsn = bench.ingestd_db()
    with running_ingestd(bench.config(), bench.subject_dir("ingestd-telemetrygen")) as subject:
        before, _ = stores.count_rows(dsn, "traces")
        cpu0 = subject.meter.cpu_s()
        began = time.time()
        done = subprocess.run(
            [
                str(peer.binary),
                "traces",
                "--otlp-endpoint", subject.target("grpc"),
                "--otlp-insecure",
                "--workers", str(workers_n),
                "--rate", f"{traces_per_worker:g}",
                "--duration", f"{seconds}s",
                "--batch-size", "512",
                "--child-spans", "1",
            ],
            capture_output=True,
            text=True,
            timeout=seconds + 120,
            check=False,
        )  # fmt: skip
        elapsed = time.time() - began
        time.sleep(1.0)  # the last batch (1 s batch timeout) is exported on shutdown
        cpu1 = subject.meter.cpu_s()
        after, _ = stores.count_rows(dsn, "traces")
    generated = sum(int(n) for n in re.findall(r'"traces":\s*(\d+)', done.stderr + done.stdout))
    stored = after - before
    bench.results["telemetrygen"] = {
        "version": peer.version,
        "exit_code": done.returncode,
        "offered_spans_per_s": rate,
        "workers": workers_n,
        "traces_generated": generated,
        "spans_expected": generated * 2,
        "spans_stored": stored,
        "stored_equals_expected": stored == generated * 2,
        "generated_spans_per_s": generated * 2 / elapsed,
        "stored_spans_per_s": stored / elapsed,
        "ingestd_cpu_s_per_million": (cpu1 - cpu0) / max(1, stored) * 1e6,
    }
    if done.returncode != 0:
        bench.notes.append(f"telemetrygen exited {done.returncode}: {done.stderr[-300:]}")


def collector(bench: Bench) -> None:
    peer = _peer(bench, peers.otelcol)
    if isinstance(peer, str):
        bench.results["collector"] = skipped(peer)
        return
    out: dict[str, Any] = {"version": peer.version}
    if "logs" in bench.options.signals:
        out["logs"] = _collector_logs(bench, peer)
    out["traces_nop_at_rate"] = _collector_spans(bench, peer)
    bench.results["collector"] = out


def collector_config(es_url: str, grpc_port: int, http_port: int) -> dict[str, Any]:
    """OTLP in; logs -> Elasticsearch exporter (otel mapping); traces -> batch -> nop.

    Exporter defaults as read in v0.153.0 (factory.go): sending queue of 10 requests that
    blocks when full, 10 consumers, batching by bytes (1 MB min, 5 MB max, 10 s flush), retry
    on 429, mapping mode otel. One change: compression none, since Elasticsearch runs on the
    same host (ingestd's default too; gzip would spend the shared cores).
    """
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"127.0.0.1:{grpc_port}", "max_recv_msg_size_mib": 64},
                    "http": {"endpoint": f"127.0.0.1:{http_port}"},
                }
            }
        },
        "processors": {"batch": {}},
        "exporters": {
            "elasticsearch": {
                "endpoints": [es_url],
                "mapping": {"mode": "otel"},
                "compression": "none",
            },
            "nop": {},
        },
        "service": {
            "telemetry": {"metrics": {"level": "none"}, "logs": {"level": "warn"}},
            "pipelines": {
                "logs": {"receivers": ["otlp"], "exporters": ["elasticsearch"]},
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["nop"]},
            },
        },
    }


@contextlib.contextmanager
def _running_collector(bench: Bench, peer: peers.Peer, name: str) -> Iterator[Collector]:
    grpc_port, http_port = free_port(), free_port()
    config = collector_config(bench.stack.es_url, grpc_port, http_port)
    subject = Collector(peer.binary, config, bench.subject_dir(name), grpc_port, http_port)
    try:
        yield subject
    finally:
        subject.stop()


def _collector_logs(bench: Bench, peer: peers.Peer) -> dict[str, Any]:
    dataset = "benchcollector"
    bench.ingestd_db()  # templates
    bench.streams.empty(dataset)
    with _running_collector(bench, peer, "otelcol-logs") as subject:
        transport = bench.options.transport["logs"]
        port = subject.port if transport == "grpc" else subject.http_port
        specs = bench.specs("logs", f"127.0.0.1:{port}", dataset=dataset)
        window = bench.drive(specs, subject.meter, bench.counter("logs", dataset))
        time.sleep(2.0)
        log_tail = subject.log_tail()
    result = window.summary()
    result["transport"] = transport
    stored_total, _ = bench.streams.count(dataset)
    acked_total = sum(r.ok_items for r in window.results)
    result["exact"] = {"acked_items": acked_total, "stored_items": stored_total}
    if stored_total < acked_total:
        bench.notes.append(
            f"collector logs: {acked_total - stored_total} acknowledged documents not in "
            f"Elasticsearch 2 s after the run (it acknowledges on enqueue); log: {log_tail[-400:]}"
        )
    bench.streams.empty(dataset)
    return result


def _collector_spans(bench: Bench, peer: peers.Peer) -> dict[str, Any]:
    rate = bench.options.receive_rate
    with _running_collector(bench, peer, "otelcol-spans") as subject:
        specs = bench.specs(
            "traces", f"127.0.0.1:{subject.port}", mode="rate", rate=rate, transport="grpc"
        )
        result = bench.drive(specs, subject.meter).summary()
    result["offered_per_s"] = rate
    return result
