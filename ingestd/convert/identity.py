"""The service identity of a resource, derived once for every signal (docs/design.md).

`service_identity` is the only place that reads `service.name`, `service.namespace` and the
deployment environment from a resource. Its `application_id` is the `applicationId` of the
traces and metrics tables and the `application_id` field of log documents, so a service's
traces, metrics and logs join on one value; its `readable` form (`shop/checkout@prod`) is what
the rate limiter keys tenants' limits by.

The rules, one line each:
- a string value is used as it is; any other value as its JSON text (`42`, `true`, `["a"]`),
  as the resource's attribute column shows it; an empty value counts as missing;
- `service.name` missing or empty is `unknown_service`, what the OTLP SDKs report;
- `service.namespace` and the environment missing are empty;
- the environment is `deployment.environment`, or `deployment.environment.name` (the newer
  semantic conventions' key) when the old one is missing or empty;
- a repeated key keeps its last value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from ingestd.convert.values import any_value

SERVICE_NAME = "service.name"
SERVICE_NAMESPACE = "service.namespace"
DEPLOYMENT_ENVIRONMENT = "deployment.environment"
DEPLOYMENT_ENVIRONMENT_NAME = "deployment.environment.name"
# What the OTLP SDKs report when the service sets no name.
UNKNOWN_SERVICE = "unknown_service"

_SEPARATOR = "\x1f"
_IDENTITY_KEYS = frozenset(
    (SERVICE_NAME, SERVICE_NAMESPACE, DEPLOYMENT_ENVIRONMENT, DEPLOYMENT_ENVIRONMENT_NAME)
)


@dataclass(frozen=True, slots=True)
class ServiceIdentity:
    """Who produced a resource's telemetry: namespace, name and environment."""

    namespace: str
    name: str
    environment: str

    @property
    def application_id(self) -> str:
        """xxh3_64 hex (16 characters) of `namespace \\x1f name \\x1f environment`."""
        return application_id_of(self.namespace, self.name, self.environment)

    @property
    def readable(self) -> str:
        """`namespace/name@environment`, the parts that are empty left out."""
        qualified = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{qualified}@{self.environment}" if self.environment else qualified


def service_identity(resource_attributes: Iterable[Any]) -> ServiceIdentity:
    """The identity of a resource, from its repeated `KeyValue` attributes (rules above)."""
    found: dict[str, str] = {}
    for kv in resource_attributes:
        if kv.key in _IDENTITY_KEYS:
            found[kv.key] = _text(kv.value)
    return ServiceIdentity(
        namespace=found.get(SERVICE_NAMESPACE, ""),
        name=found.get(SERVICE_NAME) or UNKNOWN_SERVICE,
        environment=found.get(DEPLOYMENT_ENVIRONMENT) or found.get(DEPLOYMENT_ENVIRONMENT_NAME, ""),
    )


def application_id(resource_attributes: Iterable[Any]) -> str:
    """The application id of a resource, from its repeated `KeyValue` attributes."""
    return service_identity(resource_attributes).application_id


def application_id_of(namespace: str, name: str, environment: str) -> str:
    """The application id of an already extracted service identity."""
    joined = f"{namespace}{_SEPARATOR}{name}{_SEPARATOR}{environment}"
    return str(xxhash.xxh3_64_hexdigest(joined.encode()))


def _text(value: Any) -> str:
    if value.WhichOneof("value") == "string_value":
        return str(value.string_value)
    decoded = any_value(value)
    return "" if decoded is None else orjson.dumps(decoded).decode()
