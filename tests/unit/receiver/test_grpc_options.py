"""The gRPC server's channel arguments follow `receivers.grpc` (the Collector's key names)."""

from __future__ import annotations

from ingestd.config import GrpcReceiverConfig
from ingestd.receiver.otlp_grpc import server_options


def test_keepalive_streams_and_handshake_reach_grpc() -> None:
    """Every limit becomes its grpc core argument, in milliseconds; 0 means no limit."""
    config = GrpcReceiverConfig.model_validate(
        {
            "max_concurrent_streams": 7,
            "handshake_timeout_s": 1.5,
            "keepalive": {
                "server_parameters": {
                    "max_connection_idle_s": 11,
                    "max_connection_age_s": 12,
                    "max_connection_age_grace_s": 0,
                    "time_s": 30,
                    "timeout_s": 5,
                },
                "enforcement_policy": {"min_time_s": 2, "permit_without_stream": True},
            },
        }
    )
    options = dict(server_options(config, reuse_port=False))
    assert options["grpc.max_concurrent_streams"] == 7
    assert options["grpc.server_handshake_timeout_ms"] == 1500
    assert options["grpc.max_connection_idle_ms"] == 11_000
    assert options["grpc.max_connection_age_ms"] == 12_000
    assert options["grpc.max_connection_age_grace_ms"] == 2**31 - 1
    assert options["grpc.keepalive_time_ms"] == 30_000
    assert options["grpc.keepalive_timeout_ms"] == 5_000
    assert options["grpc.http2.min_ping_interval_without_data_ms"] == 2_000
    assert options["grpc.keepalive_permit_without_calls"] == 1
    assert options["grpc.so_reuseport"] == 0
