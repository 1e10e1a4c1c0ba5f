"""Who may do what on the broker: one RabbitMQ user per role, and each role's permissions.

RabbitMQ grants a user three regular expressions per vhost, over the names of exchanges and queues:
`configure` (declare, delete), `write` (publish to an exchange, bind a queue) and `read` (consume a
queue, bind to an exchange); and, per topic exchange, which routing keys it may publish. From these:

- upstream systems publish orders and requests to `orderflow.intake`, and nothing else;
- each worker pool declares and consumes its own queues, and writes only where it sends: its own
  exchanges (retries, dead letters), the queues of other pools it sends commands or replies to (a
  topic permission per pool exchange names which), and, for the order pool (order and support
  events) and the inventory pool (`stock.low`) alone, `orderflow.events`;
- a subscriber declares queues of its own (`subscriber.*`, or server-named) bound to the events;
- the operator (the CLI) manages every queue and exchange of Orderflow's, and moves dead letters
  directly between queues (the default exchange), but manages no users.

The same table gives the definitions file loaded into the broker (deploy/rabbitmq/definitions.json,
`orderflow topology definitions`) and the permissions of every test vhost, so they cannot drift.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from shared.messaging import topology
from shared.settings import ROLES


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str
    # Topic exchange -> the routing keys this role may publish to it.
    topics: dict[str, str] = field(default_factory=dict, hash=False)


NOTHING = "^$"
SUBSCRIBER_QUEUES = r"subscriber\..*|amq\.gen-.*"


def _any(*patterns: str) -> str:
    return "^(" + "|".join(patterns) + ")$"


def _exactly(name: str) -> str:
    return re.escape(name)


def _owned(pool: str) -> str:
    """The names of what `pool` owns: its queues (`orderflow.<pool>.*`), its exchanges and delay
    queues (`orderflow.to.<pool>`, `orderflow.to.<pool>.delay.<ms>`)."""
    return rf"orderflow\.{pool}\..*|{re.escape(topology.route_exchange(pool))}(\..*)?"


# Where each pool sends saga messages (commands, replies), besides its own queues: the pool, and
# which of its queues (a topic permission on its `orderflow.to.<pool>`: not its intake, requests or
# dead-letter queues).
SENDS_TO = {
    "order": {
        "inventory": rf"^{re.escape(topology.STOCK_QUEUE_PREFIX)}\.\d+$",
        "payment": rf"^{re.escape(topology.PAYMENT_QUEUE)}$",
    },
    "inventory": {"order": rf"^{re.escape(topology.ORDER_SAGA_QUEUE)}$"},
    "payment": {"order": rf"^{re.escape(topology.ORDER_SAGA_QUEUE)}$"},
    "notification": {},
    "reporting": {},
}

# The events each pool publishes, as routing keys on `orderflow.events`.
PUBLISHES = {"order": r"^(order|support)\..*$", "inventory": r"^stock\.low$"}


def _pool(pool: str) -> Permissions:
    own = _owned(pool)
    write = [own, *(_exactly(topology.route_exchange(other)) for other in SENDS_TO[pool])]
    configure, read = [own], [own]
    if pool == "order":  # it declares and consumes the intake, and declares the events exchange
        configure += [_exactly(topology.INTAKE_EXCHANGE), _exactly(topology.EVENTS_EXCHANGE)]
        read.append(_exactly(topology.INTAKE_EXCHANGE))
    if pool in PUBLISHES:
        write.append(_exactly(topology.EVENTS_EXCHANGE))
    if pool in ("notification", "reporting"):  # their queues are bound to the events
        read.append(_exactly(topology.EVENTS_EXCHANGE))
    topics = {topology.route_exchange(other): queues for other, queues in SENDS_TO[pool].items()}
    if pool in PUBLISHES:
        topics[topology.EVENTS_EXCHANGE] = PUBLISHES[pool]
    return Permissions(_any(*configure), _any(*write), _any(*read), topics)


INTAKE_KEYS = _any(*(_exactly(key) for key in (topology.INTAKE_ROUTING_KEY, *topology.REQUEST_ROUTING_KEYS)))

PERMISSIONS: dict[str, Permissions] = {
    "upstream": Permissions(
        NOTHING, _any(_exactly(topology.INTAKE_EXCHANGE)), NOTHING, {topology.INTAKE_EXCHANGE: INTAKE_KEYS}
    ),
    **{pool: _pool(pool) for pool in topology.POOLS},
    "subscriber": Permissions(
        _any(SUBSCRIBER_QUEUES),
        _any(SUBSCRIBER_QUEUES),
        _any(SUBSCRIBER_QUEUES, _exactly(topology.EVENTS_EXCHANGE)),
    ),
    "operator": Permissions(
        _any(r"orderflow\..*"), _any(r"orderflow\..*", "amq\\.default"), _any(r"orderflow\..*")
    ),
}
assert tuple(PERMISSIONS) == ROLES, "every role has its permissions"


def user_of(role: str) -> str:
    """The broker user of a role, as the definitions name it."""
    return role


def permission_definitions(vhost: str, users: dict[str, str]) -> dict[str, Any]:
    """The `permissions` and `topic_permissions` of RabbitMQ's definitions on `vhost` for the roles
    of `users`, each granted to the user it maps to."""
    permissions: list[dict[str, str]] = []
    topic_permissions: list[dict[str, str]] = []
    for role, user in users.items():
        granted = PERMISSIONS[role]
        permissions.append(
            {
                "user": user,
                "vhost": vhost,
                "configure": granted.configure,
                "write": granted.write,
                "read": granted.read,
            }
        )
        topic_permissions.extend(
            {"user": user, "vhost": vhost, "exchange": exchange, "write": keys, "read": ".*"}
            for exchange, keys in granted.topics.items()
        )
    return {"permissions": permissions, "topic_permissions": topic_permissions}


def definitions(broker_topology: topology.Topology, vhost: str = "/") -> dict[str, Any]:
    """RabbitMQ definitions of Orderflow on `vhost`: the role users (without passwords: the broker
    setup gives them theirs), their permissions, and every exchange, queue and binding."""
    exchanges: list[dict[str, Any]] = []
    queues: list[dict[str, Any]] = []
    bindings: list[dict[str, Any]] = []
    for entity in broker_topology.entities():
        if entity.kind == "exchange":
            exchanges.append(
                {
                    "name": entity.name,
                    "vhost": vhost,
                    "type": entity.type,
                    "durable": True,
                    "auto_delete": False,
                    "internal": False,
                    "arguments": {},
                }
            )
            continue
        queues.append(
            {
                "name": entity.name,
                "vhost": vhost,
                "durable": True,
                "auto_delete": False,
                "arguments": entity.arguments,
            }
        )
        bindings.extend(
            {
                "source": exchange,
                "vhost": vhost,
                "destination": entity.name,
                "destination_type": "queue",
                "routing_key": routing_key,
                "arguments": {},
            }
            for exchange, routing_key in entity.bindings
        )
    return {
        "users": [{"name": user_of(role), "tags": []} for role in ROLES],
        "vhosts": [{"name": vhost}],
        **permission_definitions(vhost, {role: user_of(role) for role in ROLES}),
        "exchanges": exchanges,
        "queues": queues,
        "bindings": bindings,
    }
