"""The parse-memory measurement of `make bench` (tests/bench/parse_memory.py) sees what it
claims to: a known allocation, after an earlier larger peak, and a case's request and result."""

from __future__ import annotations

import gc
import os
import sys

import pytest

from ingestd.convert import native
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


def _native_or_skip() -> None:
    if native.available():
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"ingestd_native is not installed ({native.IMPORT_ERROR})")
    pytest.skip(f"ingestd_native is not installed ({native.IMPORT_ERROR}); run `make venv`")


def test_the_request_is_many_templates_merged_into_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The large request reaches its size with whole templates, each item with its own id."""
    monkeypatch.setenv(native.CODEC_ENV, "python")
    body, warmup = parse_memory.build_request("traces", 2 * MiB)
    assert len(body) >= 2 * MiB
    ingest, _ = parse_memory.pipeline("traces", "python")
    message = parse_memory.parse_step(ingest, "traces", body)
    spans = [s for rs in message.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert len(spans) % ITEMS_PER_REQUEST == 0
    assert len({s.span_id for s in spans}) == len(spans)
    assert 0 < len(warmup) < len(body)


@pytest.mark.parametrize("codec", ["python", "native"])
def test_the_pipeline_decodes_as_the_receivers_do(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The case's Ingest is the daemon's: the native codec gets the body unparsed (every
    signal, logs included under the default config), the Python reference a parsed message."""
    if codec == "native":
        _native_or_skip()
    monkeypatch.setenv(native.CODEC_ENV, codec)
    for signal in parse_memory.SIGNALS:
        ingest, route = parse_memory.pipeline(signal, codec)
        assert parse_memory.message_is_body(ingest, signal) is (codec == "native")
        assert route.convert_large is not None


@linux_only
@pytest.mark.parametrize("codec", ["python", "native"])
def test_a_case_reports_its_request_payload_and_growth(
    codec: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One case in process: every item converted; the total peak holds the payload, and the
    transient figure is the total minus the payload kept."""
    if codec == "native":
        _native_or_skip()
    monkeypatch.setenv(native.CODEC_ENV, codec)
    case = parse_memory.run_case("metrics", codec, 1 * MiB)
    assert case["codec"] == codec
    assert case["items"] % ITEMS_PER_REQUEST == 0
    assert case["rejected"] == 0
    assert case["message_is_body"] is (codec == "native")
    assert case["peak_growth_bytes"] >= case["payload_bytes"] - SLACK
    assert case["transient_bytes"] == max(0, case["peak_growth_bytes"] - case["payload_bytes"])
    assert case["per_request_byte"] == case["peak_growth_bytes"] / case["request_bytes"]
    assert case["transient_per_request_byte"] == case["transient_bytes"] / case["request_bytes"]
    if codec == "python":
        assert case["peak_growth_bytes"] >= case["message_bytes"] > 0
    else:
        assert case["parse_peak_bytes"] < 1 * MiB


@linux_only
def test_the_unparsed_case_needs_a_converter_of_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    """--no-parse: the Python reference refuses it; the native conversion runs on the bytes."""
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
