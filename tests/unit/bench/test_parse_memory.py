"""The parse-memory measurement of `make bench` (tests/bench/parse_memory.py) sees what it
claims to: a known allocation, after an earlier larger peak, and a case's request and result."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from ingestd.convert import native
from ingestd.convert.limits import DEFAULT_LIMITS
from tests.bench import parse_memory
from tests.bench.payloads import ITEMS_PER_REQUEST

MiB = 1024 * 1024
# The kernel's RSS counters are per-thread caches synced every 64 page faults: a reading may
# miss up to 256 KiB a thread.
SLACK = 1 * MiB
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self")


def _touch(nbytes: int) -> int:
    """Allocate *nbytes* with every page written (calloc'd pages would not be resident)."""
    block = b"\x01" * nbytes
    return len(block)


@linux_only
def test_peak_growth_sees_a_short_lived_allocation() -> None:
    """A 64 MiB block allocated and freed inside the work is counted in full, not retained."""
    size, growth = parse_memory.peak_growth(lambda: _touch(64 * MiB))
    assert size == 64 * MiB
    assert growth.method == "clear_refs"
    assert 64 * MiB - SLACK <= growth.peak_growth < 80 * MiB
    assert growth.retained < 16 * MiB


@linux_only
def test_an_earlier_larger_peak_does_not_hide_a_later_allocation() -> None:
    """The peak is reset before the work: 32 MiB after a 128 MiB peak still counts as 32 MiB."""
    _touch(128 * MiB)
    gc.collect()
    _, growth = parse_memory.peak_growth(lambda: _touch(32 * MiB))
    assert 32 * MiB - SLACK <= growth.peak_growth < 48 * MiB


@linux_only
def test_work_that_allocates_little_shows_little_growth() -> None:
    """A few small objects do not register as megabytes."""
    _, growth = parse_memory.peak_growth(lambda: [str(i) for i in range(1000)])
    assert growth.peak_growth < 4 * MiB


def test_the_request_is_many_templates_merged_into_one() -> None:
    """The large request reaches its size with whole templates, each item with its own id."""
    body, warmup = parse_memory.build_request("traces", 2 * MiB)
    assert len(body) >= 2 * MiB
    message = parse_memory.parse_step("traces", body, DEFAULT_LIMITS)
    spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) % ITEMS_PER_REQUEST == 0
    assert len({s.span_id for s in spans}) == len(spans)
    assert 0 < len(warmup) < len(body)


@linux_only
@pytest.mark.parametrize("codec", ["python", "native"])
def test_a_case_reports_its_request_payload_and_growth(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One case in process: every item converted, and a peak at least as big as the message."""
    if codec == "native" and not native.available():
        if os.environ.get("CI") == "true":
            pytest.fail(f"ingestd_native is not installed ({native.IMPORT_ERROR})")
        pytest.skip(f"ingestd_native is not installed ({native.IMPORT_ERROR}); run `make venv`")
    monkeypatch.setenv(native.CODEC_ENV, codec)
    case = parse_memory.run_case("metrics", codec, 1 * MiB)
    assert case["codec"] == codec
    assert case["items"] % ITEMS_PER_REQUEST == 0
    assert case["rejected"] == 0
    assert case["peak_growth_bytes"] >= case["message_bytes"] > 0
    assert case["per_request_byte"] == case["peak_growth_bytes"] / case["request_bytes"]


@linux_only
def test_the_unparsed_case_measures_the_conversion_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the parse, nothing is counted for a message; the Python reference refuses it."""
    monkeypatch.setenv(native.CODEC_ENV, "python")
    with pytest.raises(ValueError, match="needs the parsed message"):
        parse_memory.run_case("metrics", "python", 1 * MiB, parse=False)
    if not native.available():
        return
    monkeypatch.setenv(native.CODEC_ENV, "native")
    case = parse_memory.run_case("metrics", "native", 1 * MiB, parse=False)
    assert case["parsed"] is False
    assert case["parse_peak_bytes"] < 1 * MiB
    assert case["peak_growth_bytes"] >= case["payload_bytes"] - SLACK
