from typing import Any

__version__: str

class DecodeError(ValueError): ...

def convert_traces(
    body: bytes,
    *,
    max_time_unix_nano: int,
    application_id: str | None = None,
    max_buckets_per_point: int = ...,
) -> tuple[Any, ...]: ...

def convert_metrics(
    body: bytes,
    *,
    max_time_unix_nano: int,
    application_id: str | None = None,
    max_buckets_per_point: int = ...,
) -> tuple[Any, ...]: ...

def convert_logs(
    body: bytes,
    *,
    max_time_unix_nano: int,
    now_unix_nano: int,
    dataset: str,
    namespace: str,
    application_id: str | None = None,
    from_attributes: bool = True,
    locked_namespace: str | None = None,
    expected: dict[tuple[str, str], tuple[str, str]] | None = None,
    routes: list[tuple[str, str]] | None = None,
) -> tuple[Any, ...]: ...

def json_to_protobuf(signal: str, body: bytes) -> bytes | None: ...
