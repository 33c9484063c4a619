"""ingestd's compiled codec; `ingestd.convert.native` is the only caller (see native/README.md)."""

from ingestd_native._native import (
    DecodeError,
    __version__,
    convert_logs,
    convert_metrics,
    convert_traces,
    json_to_protobuf,
)

__all__ = ["DecodeError", "__version__", "convert_logs", "convert_metrics", "convert_traces",
    "json_to_protobuf",
]
