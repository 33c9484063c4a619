"""The exactly-once ledger: what every request was told, checked against what was stored.

Every record the load generator sends carries two attributes, `chaos.run` (one run) and
`chaos.seq` (unique per record). The ledger keeps, per request, its records and its final
outcome as an OTLP exporter sees it:

- ok:        answered success; `rejected` records refused as partial success (by count);
- rejected:  answered a permanent error (the client drops the data);
- gave_up:   never answered success before the client's deadline (connection lost, timeouts,
             or only retryable errors): the outcome is unknown to the client.

`check` reads PostgreSQL and Elasticsearch back and counts, per record:
- acknowledged but missing        (must be 0)
- stored more than once           (must be 0)
- stored though refused for good  (must be 0: a permanent error means "not stored")
- stored after the client gave up (allowed: the request may have been stored before its answer
                                   was lost; reported)
- expected refusals that were stored, and partial-success counts that disagree (must be 0).
"""

from __future__ import annotations

import enum
import itertools
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ingestd.model import Signal


class Outcome(enum.StrEnum):
    OK = "ok"
    REJECTED = "rejected"
    GAVE_UP = "gave_up"
    PENDING = "pending"


@dataclass
class Request:
    """One OTLP export request and everything its client heard about it."""

    signal: Signal
    transport: str
    seqs: list[str]
    # Records built to be refused (clock skew): they must not be stored, and the partial
    # success count must name exactly them.
    expect_refused: frozenset[str] = frozenset()
    outcome: Outcome = Outcome.PENDING
    rejected: int = 0
    attempts: int = 0
    # Status names/codes heard, in order (e.g. UNAVAILABLE, 503, conn_reset).
    heard: list[str] = field(default_factory=list)
    last_status: str = ""


@dataclass
class Ledger:
    """All requests of one fault's run."""

    run_id: str
    requests: list[Request] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def new_seqs(self, prefix: str, n: int) -> list[str]:
        return [f"{prefix}:{next(self._seq)}" for _ in range(n)]

    def add(self, request: Request) -> Request:
        self.requests.append(request)
        return request

    def counts(self) -> Counter[str]:
        counter: Counter[str] = Counter(r.outcome.value for r in self.requests)
        counter["records"] = sum(len(r.seqs) for r in self.requests)
        counter["acked_records"] = sum(
            len(r.seqs) - r.rejected for r in self.requests if r.outcome is Outcome.OK
        )
        return counter

    def heard(self) -> Counter[str]:
        return Counter(status for r in self.requests for status in r.heard)


@dataclass
class Verdict:
    """The checker's findings for one fault."""

    requests: int = 0
    records: int = 0
    acked_requests: int = 0
    acked_records: int = 0
    stored_records: int = 0
    rejected_requests: int = 0
    gave_up_requests: int = 0
    missing: int = 0
    duplicated: int = 0
    stored_though_refused: int = 0
    stored_after_give_up: int = 0
    expected_refusals_stored: int = 0
    partial_count_mismatches: int = 0
    unexpected_partial: int = 0
    examples: list[str] = field(default_factory=list)
    # A few records stored more than once, for the runner to show where their copies are.
    duplicate_seqs: list[str] = field(default_factory=list)

    @property
    def violations(self) -> int:
        return (
            self.missing
            + self.duplicated
            + self.stored_though_refused
            + self.expected_refusals_stored
            + self.partial_count_mismatches
            + self.unexpected_partial
        )

    @property
    def ok(self) -> bool:
        return self.violations == 0

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k not in ("examples", "duplicate_seqs")}
        data["violations"] = self.violations
        data["examples"] = self.examples[:10]
        return data


def check(ledger: Ledger, stored: dict[str, int]) -> Verdict:
    """Compare *ledger* with *stored* (seq -> how many copies exist across PG and ES)."""
    v = Verdict(requests=len(ledger.requests))
    for request in ledger.requests:
        v.records += len(request.seqs)
        copies = [stored.get(seq, 0) for seq in request.seqs]
        for seq, n in zip(request.seqs, copies, strict=True):
            if n > 1:
                v.duplicated += 1
                if len(v.duplicate_seqs) < 5:
                    v.duplicate_seqs.append(seq)
                _example(
                    v,
                    f"{seq} stored {n} times ({request.signal}/{request.transport}; "
                    f"{request.attempts} attempts, heard {' '.join(request.heard[-6:])})",
                )
        if request.expect_refused:
            stored_bad = [s for s in request.expect_refused if stored.get(s, 0)]
            v.expected_refusals_stored += len(stored_bad)
            for seq in stored_bad[:3]:
                _example(v, f"{seq} should have been refused (clock skew) but is stored")
        if request.outcome is Outcome.OK:
            v.acked_requests += 1
            good = [s for s in request.seqs if s not in request.expect_refused]
            v.acked_records += len(good)
            if request.expect_refused and request.rejected != len(request.expect_refused):
                v.partial_count_mismatches += 1
                _example(
                    v,
                    f"partial success said {request.rejected} rejected, "
                    f"{len(request.expect_refused)} were built to be ({request.signal})",
                )
            elif not request.expect_refused and request.rejected:
                v.unexpected_partial += 1
                _example(v, f"{request.rejected} valid {request.signal} records refused")
            for seq in good:
                if stored.get(seq, 0) == 0:
                    v.missing += 1
                    _example(
                        v,
                        f"{seq} acknowledged ({request.signal}/{request.transport}) "
                        f"but not stored; heard {request.heard[-4:]}",
                    )
        elif request.outcome is Outcome.REJECTED:
            v.rejected_requests += 1
            n = sum(1 for c in copies if c)
            if n:
                v.stored_though_refused += n
                _example(
                    v,
                    f"{request.signal} request refused with {request.last_status} "
                    f"but {n} of its records are stored",
                )
        else:
            v.gave_up_requests += 1
            v.stored_after_give_up += sum(1 for c in copies if c)
    v.stored_records = sum(1 for n in stored.values() if n)
    return v


def _example(verdict: Verdict, text: str) -> None:
    if len(verdict.examples) < 20:
        verdict.examples.append(text)


def merge_counts(*sources: Iterable[tuple[str, int]]) -> dict[str, int]:
    """seq -> copies, summed over several stores (a seq lives in exactly one of them)."""
    total: Counter[str] = Counter()
    for source in sources:
        for seq, n in source:
            total[seq] += n
    return dict(total)
