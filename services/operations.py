"""`orderflow dlq ...`: inspect, replay and purge the dead-letter queues of every worker;
`orderflow topology declare` and `upgrade`: declare the broker's exchanges and queues, or bring
those of an older release in line with this one."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from shared import redaction
from shared.errors import CommandError
from shared.messaging.dead_letters import DeadLetterOffice, dead_letter_queues, printable, resolve
from shared.messaging.nodes import connect_to_a_node
from shared.messaging.publisher import Publisher
from shared.messaging.tls import AmqpTls
from shared.messaging.transport import topology_of
from shared.settings import Settings


@contextmanager
def _office(settings: Settings) -> Iterator[DeadLetterOffice]:
    tls, url = AmqpTls.of(settings), settings.amqp_url_of("operator")
    publisher = Publisher(url, tls)
    try:
        with connect_to_a_node(tls.connection(url)) as connection:
            yield DeadLetterOffice(connection, publisher, settings.inventory_partitions)
    finally:
        publisher.close()


def dlq_list(settings: Settings, queue: str | None, as_json: bool) -> int:
    """Count per dead-letter queue, or the messages of one: any bytes, shown with secrets masked."""
    if queue is None:
        return _dlq_counts(settings, as_json)
    dead = resolve(queue, settings.inventory_partitions)
    with _office(settings) as office:
        letters = office.browse(dead)
    if as_json:
        print(json.dumps([letter.as_json() for letter in letters], indent=2))
        return 0
    print(f"{len(letters)} message(s) in {dead}")
    for letter in letters:
        reason = printable(redaction.redact_text(letter.reason))
        print(f"\n{letter.id}  {letter.dead_lettered_at or ''}")
        print(f"  reason: {reason}\n  body:   {letter.preview()}")
    return 0


def _dlq_counts(settings: Settings, as_json: bool) -> int:
    sources = dead_letter_queues(settings.inventory_partitions)
    with _office(settings) as office:
        counts = office.counts()
    if as_json:
        print(json.dumps([{"queue": q, "source": sources[q], "messages": n} for q, n in counts.items()]))
    else:
        for name, count in counts.items():
            print(f"{count:>7}  {name}")
    return 0


def dlq_replay(settings: Settings, queue: str, message_id: str | None, replay_all: bool) -> int:
    dead = resolve(queue, settings.inventory_partitions)
    with _office(settings) as office:
        replayed = office.replay(dead, None if replay_all else {message_id or ""})
    if not replayed and not replay_all:
        print(f"no message {message_id} in {dead} (replayed already?)")
        return 1
    source = dead_letter_queues(settings.inventory_partitions)[dead]
    print(f"replayed {len(replayed)} message(s) from {dead} to {source}")
    return 0


def dlq_purge(settings: Settings, queue: str, confirmed: bool) -> int:
    """Delete the dead letters of a queue: those counted when asked, once a person said yes on a
    terminal (or `confirmed`, --yes); without a terminal to ask on, nothing."""
    dead = resolve(queue, settings.inventory_partitions)
    with _office(settings) as office:
        count = office.count(dead)
    if count and not confirmed and not _agreed(f"purge {count} message(s) from {dead}"):
        print(f"nothing purged from {dead}")
        return 1
    with _office(settings) as office:
        purged = office.purge(dead, limit=count)
    print(f"purged {purged} message(s) from {dead}")
    return 0


def _agreed(action: str) -> bool:
    """Whether a person at the terminal agrees to `action`; with no terminal to ask on, an error."""
    if not sys.stdin.isatty():
        raise CommandError(f"refusing to {action} unconfirmed: no terminal to ask on; pass --yes")
    print(f"{action}? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def topology_declare(settings: Settings) -> int:
    """Declare every exchange and queue, as the operator: before the pools first start on a broker
    that was not given the definitions file, and after changing what the topology depends on."""
    with connect_to_a_node(AmqpTls.of(settings).connection(settings.amqp_url_of("operator"))) as connection:
        topology_of(settings).declare(connection)
    print("declared every exchange and queue of Orderflow")
    return 0


def topology_upgrade(settings: Settings) -> int:
    """Bring the broker's queues in line with this release; 1 while some are left to the operator."""
    tls, url = AmqpTls.of(settings), settings.amqp_url_of("operator")
    publisher = Publisher(url, tls)
    try:
        with connect_to_a_node(tls.connection(url)) as connection:
            done, left = topology_of(settings).upgrade(connection, publisher)
    finally:
        publisher.close()
    for line in done:
        print(line)
    for line in left:
        print(f"left alone: {line}; stop its consumers, drain it and run this again", file=sys.stderr)
    if not done and not left:
        print("the broker already matches this release")
    return 1 if left else 0
