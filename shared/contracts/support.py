"""Commands of the support desk, sent by `orderflow support ...` to the order worker, which owns the cases.

The CLI names the case (`case-` and 12 hex digits) so that a resent `OpenCase` opens one case,
and each command's `message_id` is its idempotency key: the case remembers every message it
applied, so a redelivered command changes nothing twice. Every command names the case's order,
the correlation id that logs follow.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.contracts.base import CaseId, OrderMessage
from shared.contracts.intake import MAX_LINES, OrderLine

MAX_TEXT = 4000

CaseKindName = Literal["question", "return", "exchange"]


class _CaseCommand(OrderMessage):
    case_id: CaseId


class OpenCase(_CaseCommand):
    """Open a case about an order. `returned` (a return or an exchange): the units coming back,
    None for all of the order's lines; `replacement` (an exchange): the units sent instead."""

    kind: CaseKindName
    text: str = Field(min_length=1, max_length=MAX_TEXT)
    returned: list[OrderLine] | None = Field(default=None, min_length=1, max_length=MAX_LINES)
    replacement: list[OrderLine] = Field(default_factory=list, max_length=MAX_LINES)


class ReplyCase(_CaseCommand):
    """Answer the customer on a case."""

    text: str = Field(min_length=1, max_length=MAX_TEXT)


class CloseCase(_CaseCommand):
    """Close a case, with a closing note for the customer if given."""

    note: str | None = Field(default=None, min_length=1, max_length=MAX_TEXT)


class ApproveCase(_CaseCommand):
    """Approve a return or an exchange: the order carries it out and settles the case."""
