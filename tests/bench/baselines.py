"""The sinks' own limits, measured with the same rows and documents ingestd would write.

- raw COPY: N writer processes (N = ingestd's `sinks.timescale.writers`), each with its own
  connection, COPY the converter's output of the benchmark's requests (binary, the writer's wire
  types, `batch.max_rows` rows per transaction) into the same tables of a database made by the
  same `schema apply`. No ledger, no dimension upserts, no receiver: PostgreSQL's ceiling for
  these rows with this many writers.
- raw `_bulk`: N writer processes (N = `sinks.elasticsearch.writers`) replay the converter's
  bulk items of the same requests as `_bulk` bodies of `batch.max_bytes`, into a data stream of
  the same template. Each pass over the prepared documents gives them new `_id`s, so every
  document is a new one (a repeated `_id` would be a cheap 409).

Rows and documents are built before the clock starts; writers start together at a set time.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import time
from typing import Any

_BUILD_TIMEOUT_S = 300


def run_writers(
    target: Any, args_per_writer: list[tuple[Any, ...]]
) -> tuple[float, Any, list[Any]]:
    """Spawn one process per args tuple; return (start time, result queue, processes).

    Each process gets (*args, ready, start_at_queue, results); it prepares, puts "ready", waits
    for the start time and runs.
    """
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    starts = [ctx.Queue() for _ in args_per_writer]
    procs = [
        ctx.Process(target=target, args=(*args, ready, starts[i], results), daemon=True)
        for i, args in enumerate(args_per_writer)
    ]
    for proc in procs:
        proc.start()
    for _ in procs:
        message = ready.get(timeout=_BUILD_TIMEOUT_S)
        if message[0] == "error":
            raise RuntimeError(message[1])
    start_at = time.time() + 0.5
    for start in starts:
        start.put(start_at)
    return start_at, results, procs


def collect(results: Any, procs: list[Any], timeout_s: float) -> list[dict[str, Any]]:
    out = []
    for _ in procs:
        try:
            message = results.get(timeout=timeout_s)
        except queue.Empty:
            raise RuntimeError("a baseline writer did not finish") from None
        if message[0] == "error":
            raise RuntimeError(message[1])
        out.append(message[1])
    for proc in procs:
        proc.join(timeout=10)
    return out


# -- raw COPY -----------------------------------------------------------------------------------


def copy_writer(
    index: int,
    signal: str,
    dsn: str,
    requests: int,
    rows_per_copy: int,
    duration_s: float,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """One writer process: build rows, then COPY them in transactions until the time is up."""
    try:
        import psycopg
        from psycopg.sql import SQL, Identifier

        from ingestd.convert import metrics, traces
        from ingestd.convert.copy_binary import COPY_HEADER, COPY_TRAILER
        from ingestd.model import Signal
        from ingestd.receiver.decode import parse_protobuf
        from tests.bench import payloads

        module: Any = traces if signal == "traces" else metrics
        convert = (
            traces.TraceConverter(max_future_skew_s=86400)
            if signal == "traces"
            else metrics.MetricConverter(max_future_skew_s=86400)
        )
        templates = [payloads.build(signal, 900_000 + index * 1000 + t) for t in range(4)]
        # The rows as ingestd's writer sends them: binary COPY tuples, one per row.
        rows: list[bytes] = []
        for seq in range(requests):
            body = templates[seq % len(templates)].stamp(200 + index, seq)
            payload = convert(parse_protobuf(Signal(signal), body)).payload
            rows.extend(payload.row(i) for i in range(payload.rows))
        batches = [
            COPY_HEADER + b"".join(rows[i : i + rows_per_copy]) + COPY_TRAILER
            for i in range(0, len(rows), rows_per_copy)
        ]
        batch_rows = [len(rows[i : i + rows_per_copy]) for i in range(0, len(rows), rows_per_copy)]
        copy_sql = SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
            Identifier(module.TABLE), SQL(", ").join(Identifier(c) for c, _ in module.COLUMNS)
        )
        conn = psycopg.connect(dsn, autocommit=True)
        ready.put(("ready", index))
        start_at = start.get()
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + duration_s
        written = copies = 0
        cpu0 = time.process_time()
        while time.time() < end:
            which = copies % len(batches)
            with conn.transaction(), conn.cursor() as cur, cur.copy(copy_sql) as copy:
                copy.write(batches[which])
            written += batch_rows[which]
            copies += 1
        conn.close()
        results.put(
            ("done", {"rows": written, "copies": copies, "cpu_s": time.process_time() - cpu0})
        )
    except Exception as exc:  # the parent must hear about it, not wait forever
        (ready if "start_at" not in locals() else results).put(("error", f"copy writer: {exc!r}"))


# -- raw _bulk ------------------------------------------------------------------------------------


def bulk_writer(
    index: int,
    es_url: str,
    dataset: str,
    namespace: str,
    requests: int,
    bulk_bytes: int,
    duration_s: float,
    ready: Any,
    start: Any,
    results: Any,
) -> None:
    """One writer process: build bulk items, then POST `_bulk` bodies until the time is up."""
    try:
        import orjson
        import urllib3

        from ingestd.convert.logs import LogsConverter
        from ingestd.model import Signal
        from ingestd.receiver.decode import parse_protobuf
        from tests.bench import payloads

        convert = LogsConverter(namespace=namespace)
        templates = [
            payloads.build("logs", 900_000 + index * 1000 + t, dataset=dataset, namespace=namespace)
            for t in range(4)
        ]
        # Each item split after its _id, so a new pass can give it a new one cheaply.
        items: list[tuple[bytes, bytes]] = []
        for seq in range(requests):
            body = templates[seq % len(templates)].stamp(200 + index, seq)
            for item in convert(parse_protobuf(Signal.LOGS, body)).payload:
                cut = item.index(b'"}}\n')
                items.append((item[:cut], item[cut:]))
        http = urllib3.PoolManager(maxsize=1)
        url = f"{es_url}/_bulk?filter_path=errors,items.*.error.type"
        headers = {"Content-Type": "application/x-ndjson"}
        ready.put(("ready", index))
        start_at = start.get()
        time.sleep(max(0.0, start_at - time.time()))
        end = start_at + duration_s
        sent = bulks = rejected = 0
        cpu0 = time.process_time()
        position, passes = 0, 0
        while time.time() < end:
            suffix = b"" if passes == 0 else b"-%d-%d" % (index, passes)
            parts: list[bytes] = []
            size = 0
            while size < bulk_bytes:
                head, tail = items[position]
                parts += (head, suffix, tail)
                size += len(head) + len(suffix) + len(tail)
                position += 1
                if position == len(items):
                    position, passes = 0, passes + 1
                    suffix = b"-%d-%d" % (index, passes)
            resp = http.request("POST", url, body=b"".join(parts), headers=headers)
            answer = orjson.loads(resp.data)
            if resp.status != 200:
                raise RuntimeError(f"_bulk answered {resp.status}: {resp.data[:300]!r}")
            if answer.get("errors"):
                rejected += sum(
                    1 for i in answer.get("items", []) if "error" in next(iter(i.values()))
                )
            sent += len(parts) // 3
            bulks += 1
        results.put(
            (
                "done",
                {
                    "docs": sent,
                    "bulks": bulks,
                    "rejected": rejected,
                    "cpu_s": time.process_time() - cpu0,
                },
            )
        )
    except Exception as exc:  # the parent must hear about it, not wait forever
        (ready if "start_at" not in locals() else results).put(("error", f"bulk writer: {exc!r}"))
