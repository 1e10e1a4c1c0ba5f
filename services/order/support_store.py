"""The support desk's repository: one document per case (`support_cases`), in the order worker's database."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pymongo.database import Database

from services.order.domain import Customer
from services.order.support_domain import Case, CaseKind, CaseLine, CaseStatus, Entry, EntryKind
from shared.store import claim_id, find_by_ids, insert_new, write_over


class CaseRepository:
    """Cases, and the claims that make each change of a case happen once.

    As with orders (services/order/store.py), moving a case from version n to n+1 first inserts
    the claim `<case id>:<n+1>` holding the new state (in `support_case_changes`): of two writers
    racing for one case, exactly one wins, on any store. A writer that dies between its claim and
    its write is rolled forward by the next one (`refresh`); readers see the claimed state at once.
    """

    def __init__(self, db: Database) -> None:
        self._cases = db["support_cases"]
        self._changes = db["support_case_changes"]

    def add(self, cases: list[Case]) -> set[str]:
        """Insert new cases; returns the ids that existed already (a case id is its opening's key)."""
        return insert_new(self._cases, [_to_document(case) for case in cases])

    def get(self, case_id: str) -> Case | None:
        return self.get_many([case_id]).get(case_id)

    def get_many(self, case_ids: Iterable[str]) -> dict[str, Case]:
        """The cases as last decided (a claimed change counts, written or not); reads only."""
        return self._latest(case_ids)[0]

    def refresh(self, case_ids: Iterable[str]) -> dict[str, Case]:
        """As `get_many`, writing the changes a writer claimed and died before writing: the worker's read."""
        cases, behind = self._latest(case_ids)
        write_over(
            self._cases, [(_to_document(cases[case_id]), version) for case_id, version in behind.items()]
        )
        return cases

    def save(self, cases: list[Case]) -> list[Case]:
        """Write a change of each case (read at `case.version`); returns those another writer
        changed first, unchanged. The others are at their new version."""
        if not cases:
            return []
        states = [{**_to_document(case), "version": case.version + 1} for case in cases]
        claims = [
            {"_id": claim_id(case.case_id, state["version"]), "case_id": case.case_id, "state": state}
            for case, state in zip(cases, states, strict=True)
        ]
        taken = insert_new(self._changes, claims)
        lost = {claim["case_id"] for claim in claims if claim["_id"] in taken}
        write_over(
            self._cases,
            [
                (state, case.version)
                for case, state in zip(cases, states, strict=True)
                if case.case_id not in lost
            ],
        )
        for case in cases:
            if case.case_id not in lost:
                case.version += 1
        return [case for case in cases if case.case_id in lost]

    def all(self) -> list[Case]:
        """Every case, oldest first: a scan, for an operator's listing, never per message."""
        cases = [_from_document(document) for document in self._cases.find()]
        return sorted(cases, key=lambda case: case.opened_at)

    def _latest(self, case_ids: Iterable[str]) -> tuple[dict[str, Case], dict[str, int]]:
        """The cases rolled forward to their last claimed change, and the version each document
        is still at, for those it is behind."""
        cases = {document["_id"]: _from_document(document) for document in find_by_ids(self._cases, case_ids)}
        written = {case_id: case.version for case_id, case in cases.items()}
        ahead = dict(cases)
        while ahead:
            claims = find_by_ids(
                self._changes, (claim_id(case_id, case.version + 1) for case_id, case in ahead.items())
            )
            ahead = {claim["case_id"]: _from_document(claim["state"]) for claim in claims}
            cases.update(ahead)
        behind = {
            case_id: version for case_id, version in written.items() if cases[case_id].version != version
        }
        return cases, behind


def _to_document(case: Case) -> dict[str, Any]:
    return {
        "_id": case.case_id,
        "order_id": case.order_id,
        "kind": case.kind.value,
        "text": case.text,
        "opened_at": case.opened_at,
        "status": case.status.value,
        "customer": _customer_document(case.customer),
        "currency": case.currency,
        "returned": [vars(line) for line in case.returned],
        "replacement": [vars(line) for line in case.replacement],
        "reason": case.reason,
        "conversation": [
            {
                "at": entry.at,
                "kind": entry.kind.value,
                "message_id": entry.message_id,
                "status": entry.status.value,
                "text": entry.text,
                "reason": entry.reason,
            }
            for entry in case.conversation
        ],
        "version": case.version,
    }


def _customer_document(customer: Customer | None) -> dict[str, str | None] | None:
    if customer is None:
        return None
    return {"customer_id": customer.customer_id, "name": customer.name, "email": customer.email}


def _from_document(document: dict[str, Any]) -> Case:
    customer = document.get("customer")
    return Case(
        case_id=document["_id"],
        order_id=document["order_id"],
        kind=CaseKind(document["kind"]),
        text=document["text"],
        opened_at=document["opened_at"],
        status=CaseStatus(document["status"]),
        customer=Customer(customer_id=customer["customer_id"], name=customer["name"], email=customer["email"])
        if customer
        else None,
        currency=document.get("currency"),
        returned=[CaseLine(**line) for line in document.get("returned", [])],
        replacement=[CaseLine(**line) for line in document.get("replacement", [])],
        reason=document.get("reason"),
        conversation=[
            Entry(
                at=entry["at"],
                kind=EntryKind(entry["kind"]),
                message_id=entry["message_id"],
                status=CaseStatus(entry["status"]),
                text=entry.get("text"),
                reason=entry.get("reason"),
            )
            for entry in document.get("conversation", [])
        ],
        version=document.get("version", 0),
    )
