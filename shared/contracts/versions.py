"""Schema versions of messages: what each contract's current version is, and how older ones are read.

A contract declares its current version as the default of its `schema_version` field (1 unless it
says otherwise). A change that only adds optional fields keeps the version: older senders leave
them out, newer ones add what older readers ignore. A change that renames, splits or reinterprets a
field bumps the version and registers an upcaster that turns a payload of the version before into
one of the new version. `upcast` applies them in turn, at decode time, in the one place each kind
of message is decoded (`saga_bus._decode`, `services/order/intake.py`, `events.decode_event`), so
handlers only ever see the current shape. A payload newer than the worker knows is a permanent
error (`NewerSchema`): it is dead-lettered with the reason and replayed once the worker is upgraded.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from shared.errors import InvalidMessage

Payload = dict[str, Any]
Upcaster = Callable[[Payload], Payload]

VERSION_FIELD = "schema_version"

# (contract name, version it reads) -> upcaster to the next version. Contract names are the wire
# names: saga message types are their actor's, public events their `type`'s class.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class NewerSchema(InvalidMessage):
    """A message of a schema version newer than this worker knows: it was sent by a newer release."""


def current_version(contract: type[BaseModel]) -> int:
    """The schema version `contract` writes: the default of its `schema_version` field."""
    default = contract.model_fields[VERSION_FIELD].default
    assert isinstance(default, int), f"{contract.__name__} declares no schema version"
    return default


def upcaster(contract: type[BaseModel], from_version: int) -> Callable[[Upcaster], Upcaster]:
    """Register the decorated function as the upcaster of `contract` from `from_version` to the next."""

    def register(function: Upcaster) -> Upcaster:
        assert from_version < current_version(contract), (
            f"{contract.__name__} is at version {current_version(contract)}: no upcaster from {from_version}"
        )
        key = (contract.__name__, from_version)
        assert key not in _UPCASTERS, f"two upcasters of {contract.__name__} from version {from_version}"
        _UPCASTERS[key] = function
        return function

    return register


def upcast(contract: type[BaseModel], payload: Any) -> Any:
    """`payload` as a payload of `contract`'s current version. A payload that is not a JSON object
    or names no valid version is returned as it is, for the contract's validation to describe."""
    if not isinstance(payload, dict):
        return payload
    version = payload.get(VERSION_FIELD, 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        return payload
    current = current_version(contract)
    if version > current:
        raise NewerSchema(
            f"{contract.__name__} of schema version {version}: this worker reads up to {current}; "
            "upgrade it and replay the dead letter"
        )
    while version < current:
        step = _UPCASTERS.get((contract.__name__, version))
        if step is None:
            raise InvalidMessage(f"{contract.__name__} of schema version {version} is no longer read")
        payload = {**step(payload), VERSION_FIELD: version + 1}
        version += 1
    return payload


def check_upcasters(contracts: list[type[BaseModel]]) -> list[str]:
    """The missing links: each contract must read every version from 1 to its current one."""
    return [
        f"{contract.__name__}: no upcaster from version {version}"
        for contract in contracts
        for version in range(1, current_version(contract))
        if (contract.__name__, version) not in _UPCASTERS
    ]
