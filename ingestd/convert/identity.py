"""Ids every converter derives from OTLP content, the same in every replica (docs/design.md).

`application_id` is the `applicationId` of the database contract and the `application_id` field
of log documents, so a service's traces, metrics and logs join on one value.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import xxhash

SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
DEPLOYMENT_ENVIRONMENT = "deployment.environment"
# Newer semantic conventions renamed deployment.environment; the old key wins when both exist.
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
# What the OTLP SDKs report when the service sets no name.
UNKNOWN_SERVICE = "unknown_service"

_SEPARATOR = "\x1f"
_IDENTITY_KEYS = frozenset(
    (SERVICE_NAME, SERVICE_NAMESPACE, DEPLOYMENT_ENVIRONMENT, DEPLOYMENT_ENVIRONMENT_NAME)
)


def application_id(resource_attributes: Iterable[Any]) -> str:
    """The application id of a resource, from its repeated `KeyValue` attributes.

    xxh3_64 hex (16 characters) of `service.namespace \\x1f service.name \\x1f
    deployment.environment`; missing parts are empty and `service.name` defaults to
    `unknown_service`.
    """
    found: dict[str, str] = {}
    for kv in resource_attributes:
        if kv.key in _IDENTITY_KEYS:
            found[kv.key] = _text(kv.value)
    environment = found.get(DEPLOYMENT_ENVIRONMENT)
    if environment is None:
        environment = found.get(DEPLOYMENT_ENVIRONMENT_NAME, "")
    return application_id_of(
        found.get(SERVICE_NAMESPACE, ""), found.get(SERVICE_NAME) or UNKNOWN_SERVICE, environment
    )


def application_id_of(namespace: str, name: str, environment: str) -> str:
    """The application id of an already extracted service identity."""
    joined = f"{namespace}{_SEPARATOR}{name}{_SEPARATOR}{environment}"
    return str(xxhash.xxh3_64_hexdigest(joined.encode()))


def _text(value: Any) -> str:
    # Identity attributes are strings by convention; other scalars are used as their text so
    # that a service sending `service.name=42` still gets a stable id.
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return str(value.string_value)
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind in ("int_value", "double_value"):
        return str(getattr(value, kind))
    return ""
