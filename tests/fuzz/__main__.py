"""Long fuzz sessions: `python -m tests.fuzz --target proto|json|bytes|native --minutes 30`.

- proto: structure-aware, hypothesis builds OTLP protobuf requests of all three signals
  (sometimes gzip/deflate/zstd compressed) and runs them through `targets.Target`.
- json: structure-aware OTLP/JSON, valid requests with subtrees replaced, removed or added.
- native: differential, the native and the Python codec on the same protobuf requests
  (generated, and with bytes flipped, cut or inserted) and OTLP/JSON requests (the native
  transcoder must yield Python's message or leave the input to Python); any difference in
  the COPY bytes, bulk bodies, rejects, dimension rows or verdict is a finding
  (tests/fuzz/differential.py).
- bytes: coverage-guided raw byte mutation with atheris (libFuzzer) over ingestd's own code,
  seeded with valid requests; the first byte picks signal, encoding and compression.

Every finding (an oracle failure, an undocumented exception, an input slower than
--slow-s, a MemoryError under the address-space cap) is written to `.fuzz/findings/` with
its input and traceback, once per signature, and the session goes on. A JSON summary with the
example count is written to `.fuzz/<target>.json` every few seconds and at the end; the exit
status is 1 when anything was found.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import re
import resource
import sys
import time
import traceback
import warnings
import zlib
from pathlib import Path
from typing import Any

OUT = Path(".fuzz")
ENCODINGS = ("", "gzip", "deflate", "zstd")
MEMORY_CAP = 4 * 1024**3


def compress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.compress(body, compresslevel=1)
    if encoding == "deflate":
        return zlib.compress(body, 1)
    if encoding == "zstd":
        import zstandard

        return zstandard.ZstdCompressor(level=1).compress(body)
    return body


class Session:
    """Counts examples and outcomes, records findings once per signature, writes the summary."""

    def __init__(self, name: str, minutes: float, slow_s: float, out: Path) -> None:
        self.name = name
        self.out = out
        self.slow_s = slow_s
        self.began = time.time()
        self.until = self.began + minutes * 60
        self.examples = 0
        self.outcomes: dict[str, int] = {}
        self.findings: dict[str, int] = {}
        self.slowest_s = 0.0
        self._written = 0.0
        (out / "findings").mkdir(parents=True, exist_ok=True)

    def left(self) -> bool:
        return time.time() < self.until

    def run(self, target: Any, signal: Any, body: bytes, encoding: str, *, as_json: bool) -> None:
        """One input; a finding is recorded and re-raised (hypothesis shrinks it)."""
        self.examples += 1
        began = time.perf_counter()
        try:
            run = target.json if as_json else target.protobuf
            outcome = run(signal, body, encoding)
            elapsed = time.perf_counter() - began
            if elapsed > self.slow_s:
                from tests.fuzz.targets import Finding

                raise Finding(f"input took {elapsed:.1f} s (> {self.slow_s} s)")
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                raise
            self._record(exc, signal, body, encoding, as_json)
            raise
        finally:
            self.slowest_s = max(self.slowest_s, time.perf_counter() - began)
        key = f"{signal}:{'json' if as_json else 'proto'}:{outcome.http_status}"
        self.outcomes[key] = self.outcomes.get(key, 0) + 1
        if time.time() - self._written > 10:
            self.write()

    def _record(self, exc: BaseException, signal: Any, body: bytes, enc: str, js: bool) -> None:
        tb = traceback.extract_tb(exc.__traceback__)
        own = [f for f in tb if "/ingestd/" in f.filename or "/tests/fuzz/" in f.filename]
        where = own[-1] if own else (tb[-1] if tb else None)
        first_line = str(exc).split("\n")[0]
        # The signature ignores values: one bug found with many inputs is one finding.
        detail = first_line.split(":")[0][:60] if type(exc).__name__ == "Finding" else ""
        detail = re.sub(r"-?[0-9][0-9.e+-]*", "N", detail.split(" cannot hold")[0])
        place = f"{Path(where.filename).name}:{where.lineno}" if where else "?"
        signature = f"{type(exc).__name__} {place} {detail}".strip()
        seen = self.findings.get(signature, 0)
        self.findings[signature] = seen + 1
        digest = hashlib.sha1(signature.encode()).hexdigest()[:10]
        # Overwritten while hypothesis shrinks: the file ends with the smallest input seen.
        if seen < 200 and (
            not (self.out / "findings" / f"{digest}.bin").exists()
            or len(body) <= (self.out / "findings" / f"{digest}.bin").stat().st_size
        ):
            (self.out / "findings" / f"{digest}.bin").write_bytes(body)
            (self.out / "findings" / f"{digest}.txt").write_text(
                f"{signature}\nsignal={signal} json={js} encoding={enc!r}\n\n"
                + "".join(traceback.format_exception(exc))[-6000:]
            )

    def write(self) -> None:
        self._written = time.time()
        summary = {
            "target": self.name,
            "seconds": round(time.time() - self.began, 1),
            "examples": self.examples,
            "examples_per_s": round(self.examples / max(1e-9, time.time() - self.began), 1),
            "slowest_input_s": round(self.slowest_s, 3),
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "outcomes": dict(sorted(self.outcomes.items())),
            "findings": self.findings,
        }
        (self.out / f"{self.name}.json").write_text(json.dumps(summary, indent=2) + "\n")


def hypothesis_session(session: Session, *, as_json: bool, differential: bool = False) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from ingestd.model import Signal
    from tests.fuzz.differential import DifferentialTarget
    from tests.fuzz.strategies import REQUESTS, json_bytes, mutated_json
    from tests.fuzz.targets import Target
    from tests.wire import mutated

    target: Any = DifferentialTarget() if differential else Target()
    signals = list(DifferentialTarget.signals) if differential else list(Signal)

    @settings(
        max_examples=100,  # short runs: the session's clock is checked between them
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
    )
    @given(st.data())
    def one(data: st.DataObject) -> None:
        signal = data.draw(st.sampled_from(signals))
        json_input = as_json or (differential and data.draw(st.booleans()))
        if json_input:
            body = json_bytes(data.draw(mutated_json(signal)))
        else:
            body = data.draw(REQUESTS[signal]).SerializeToString()
        if differential and not json_input:
            body = mutated(body, data, min_edits=0)
        choices = ("",) if differential else ("", "", "", "gzip", "deflate", "zstd")
        encoding = data.draw(st.sampled_from(choices))
        session.run(target, signal, compress(body, encoding), encoding, as_json=json_input)

    while session.left():
        # A finding was recorded by the session (and shrunk by hypothesis): keep fuzzing.
        with contextlib.suppress(Exception):
            one()
    session.write()


def atheris_session(session: Session, seconds: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["ingestd"]):
        from ingestd.model import Signal
        from tests.fuzz.targets import Target
    target = Target()
    signals = list(Signal)
    corpus = _seed_corpus(session.out / "corpus-bytes")

    def one_input(data: bytes) -> None:
        if not data:
            return
        head = data[0]
        signal = signals[head % 3]
        as_json = bool(head & 4)
        encoding = ENCODINGS[(head >> 3) % 4]
        # A finding is recorded by the session; libFuzzer goes on mutating.
        with contextlib.suppress(Exception):
            session.run(target, signal, data[1:], encoding, as_json=as_json)

    argv = [
        sys.argv[0],
        str(corpus),
        f"-max_total_time={seconds}",
        f"-rss_limit_mb={MEMORY_CAP // 1024**2}",
        "-timeout=20",
        "-max_len=65536",
        "-print_final_stats=1",
    ]
    atheris.Setup(argv, one_input)
    try:
        atheris.Fuzz()
    finally:
        session.write()


def _seed_corpus(path: Path) -> Path:
    """Valid requests of each signal and encoding, from the strategies and the OTLP examples."""
    import orjson

    from ingestd.model import Signal
    from tests.fuzz.strategies import REQUESTS, otlp_json

    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        return path
    signals = list(Signal)
    examples = Path(__file__).parent.parent / "data" / "otlp-examples"
    files = {Signal.TRACES: "trace.json", Signal.METRICS: "metrics.json", Signal.LOGS: "logs.json"}
    warnings.simplefilter("ignore")  # .example() warns that it is meant for interactive use
    for i in range(120):
        signal = signals[i % 3]
        message = REQUESTS[signal].example()
        as_json = i % 2 == 1
        encoding = ENCODINGS[(i // 6) % 4]
        body = orjson.dumps(otlp_json(message)) if as_json else message.SerializeToString()
        head = signals.index(signal) | (4 if as_json else 0) | (ENCODINGS.index(encoding) << 3)
        (path / f"seed-{i}").write_bytes(bytes([head]) + compress(body, encoding))
    for signal, name in files.items():
        head = signals.index(signal) | 4
        (path / f"example-{name}").write_bytes(bytes([head]) + (examples / name).read_bytes())
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.fuzz", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--target", choices=("proto", "json", "bytes", "native"), required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--slow-s", type=float, default=5.0, help="an input slower is a finding")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    # Unbounded memory shows up as a MemoryError (a finding) instead of the machine swapping.
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 1000))
    session = Session(args.target, args.minutes, args.slow_s, args.out)
    if args.target == "bytes":
        atheris_session(session, int(args.minutes * 60))
    else:
        hypothesis_session(
            session, as_json=args.target == "json", differential=args.target == "native"
        )
    print(json.dumps({"examples": session.examples, "findings": session.findings}))
    return 1 if session.findings else 0


if __name__ == "__main__":
    raise SystemExit(main())
