"""`orderflow dlq ...`: inspect, replay and purge the dead-letter queues of every worker."""

from __future__ import annotations

import json

from shared.messaging.dead_letters import DEAD_LETTER_QUEUES, DeadLetterOffice, UnknownQueue, resolve
from shared.messaging.exchanges import connect
from shared.settings import Settings


def dlq_list(settings: Settings, queue: str | None, as_json: bool) -> int:
    with connect(settings.amqp_url) as connection:
        office = DeadLetterOffice(connection)
        if queue is None:
            counts = office.counts()
            if as_json:
                print(
                    json.dumps(
                        [
                            {"queue": q, "source": DEAD_LETTER_QUEUES[q], "messages": n}
                            for q, n in counts.items()
                        ]
                    )
                )
            else:
                for name, count in counts.items():
                    print(f"{count:>7}  {name}")
            return 0
        if (dead := _resolved(queue)) is None:
            return 2
        letters = office.browse(dead)
    if as_json:
        print(json.dumps([letter.as_json() for letter in letters], indent=2))
        return 0
    print(f"{len(letters)} message(s) in {dead}")
    for letter in letters:
        preview = letter.body[:120].decode("utf-8", errors="replace").replace("\n", " ")
        print(
            f"\n{letter.id}  {letter.dead_lettered_at or ''}\n  reason: {letter.reason}\n  body:   {preview}"
        )
    return 0


def _resolved(queue: str) -> str | None:
    try:
        return resolve(queue)
    except UnknownQueue as e:
        print(f"error: {e}")
        return None


def dlq_replay(settings: Settings, queue: str, message_id: str | None, replay_all: bool) -> int:
    if (dead := _resolved(queue)) is None:
        return 2
    with connect(settings.amqp_url) as connection:
        replayed = DeadLetterOffice(connection).replay(dead, None if replay_all else {message_id or ""})
    if not replayed and not replay_all:
        print(f"no message {message_id} in {dead} (replayed already?)")
        return 1
    print(f"replayed {len(replayed)} message(s) from {dead} to {DEAD_LETTER_QUEUES[dead]}")
    return 0


def dlq_purge(settings: Settings, queue: str) -> int:
    if (dead := _resolved(queue)) is None:
        return 2
    with connect(settings.amqp_url) as connection:
        purged = DeadLetterOffice(connection).purge(dead)
    print(f"purged {purged} message(s) from {dead}")
    return 0
