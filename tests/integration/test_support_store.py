"""The support desk's cases on the real store: a case opens once, of two writers of one change one
wins, and a change whose writer died after claiming it is seen at once and written by the next."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from pymongo import MongoClient
from pymongo.database import Database

from services.order.support_domain import Case, CaseKind, CaseStatus
from services.order.support_store import CaseRepository, _to_document
from shared import store
from shared.settings import Settings
from tests.support import unique

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    client: MongoClient = store.connect(settings)
    yield store.database(client, settings, "order")
    client.close()


@pytest.fixture
def cases(db: Database) -> CaseRepository:
    return CaseRepository(db)


def new_case() -> Case:
    case = Case(unique("case"), "A-1", CaseKind.QUESTION, "Hello?", NOW)
    case.reply("m-open", "placeholder", NOW)  # any first entry: the store keeps what it is given
    return case


def test_a_case_id_opens_one_case(cases: CaseRepository) -> None:
    case = new_case()
    assert cases.add([case]) == set()
    assert cases.add([new_case(), case]) == {case.case_id}
    stored = cases.get(case.case_id)
    assert stored is not None and (stored.text, stored.version, stored.conversation) == (
        "Hello?",
        0,
        case.conversation,
    )


def test_of_two_writers_of_one_change_one_wins(cases: CaseRepository) -> None:
    case = new_case()
    cases.add([case])
    first, second = cases.refresh([case.case_id])[case.case_id], cases.refresh([case.case_id])[case.case_id]
    first.close("m-close", None, NOW)
    second.reply("m-reply", "Still there?", NOW)

    assert cases.save([first]) == []
    assert [lost.case_id for lost in cases.save([second])] == [case.case_id]
    stored = cases.get(case.case_id)
    assert stored is not None and (stored.status, stored.version) == (CaseStatus.CLOSED, 1)


def test_a_change_claimed_by_a_writer_that_died_is_seen_and_rolled_forward(
    cases: CaseRepository, db: Database
) -> None:
    case = new_case()
    cases.add([case])
    changed = case.copy()
    changed.close("m-close", "Bye", NOW)
    # What a writer leaves that claimed the change and died before writing the case.
    db["support_case_changes"].insert_one(
        {
            "_id": f"{case.case_id}:1",
            "case_id": case.case_id,
            "state": {**_to_document(changed), "version": 1},
        }
    )

    seen = cases.get(case.case_id)
    assert seen is not None and (seen.status, seen.version) == (CaseStatus.CLOSED, 1)
    assert (
        db["support_cases"].find_one({"_id": case.case_id})["status"] == "answered"
    )  # a read writes nothing
    refreshed = cases.refresh([case.case_id])[case.case_id]
    assert (refreshed.status, refreshed.version) == (CaseStatus.CLOSED, 1)
    assert db["support_cases"].find_one({"_id": case.case_id})["status"] == "closed"
    refreshed.reply("m-reply", "One more thing", NOW)
    assert cases.save([refreshed]) == []  # the next change goes on from there
