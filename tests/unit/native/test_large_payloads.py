"""Payloads of several MiB, which the native codec hands over in segments (`copy::Segments`,
`python::joined`), are byte-identical to the reference's, offsets included."""

from __future__ import annotations

import time

import pytest

from ingestd.model import Signal
from tests.bench.parse_memory import build_request
from tests.fuzz import differential

MiB = 1024 * 1024


@pytest.mark.parametrize("signal", list(Signal))
def test_a_payload_of_several_segments_is_identical(
    signal: Signal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ~3 MiB request (payload 4-9 MiB: several 1 MiB segments) gives the same bytes,
    item offsets and rejects in both codecs (metrics: the differential limits refuse some
    histograms)."""
    monkeypatch.setattr(differential, "NOW_NS", time.time_ns())
    body, _ = build_request(str(signal), 3 * MiB)
    out = differential.compare(signal, body)
    assert out["items"] > out["rejected"]
    assert len(out["data"]) > 3 * MiB
