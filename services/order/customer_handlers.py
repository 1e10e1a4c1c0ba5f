"""Customer use cases: what operators ask of the order worker (`orderflow customers set`, `forget`).

A customer's orders are the saga's: forgetting a customer erases its personal data from each of
them through the same version-claimed saves the saga makes, so a saga step that read an order
before the erasure cannot write the data back (its claim is taken; it reads the order afresh).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial

from services.order.customers import CustomerBook, CustomerRecord
from services.order.domain import Order
from services.order.handlers import CONCURRENT_ATTEMPTS, ConcurrentUpdate
from services.order.store import OrderRepository, RecentOrders
from shared.contracts.base import utcnow
from shared.contracts.customers import ForgetCustomer, UpdateCustomer
from shared.logs import message_context
from shared.messaging.ports import Batch, CommandSender

log = logging.getLogger(__name__)

# How many of a customer's orders a forget reads and writes at a time.
ORDERS_PER_ROUND = 500


class CustomerHandlers:
    def __init__(
        self,
        customers: CustomerBook,
        orders: OrderRepository | RecentOrders,
        commands: CommandSender,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.customers = customers
        self.orders = orders
        self.commands = commands
        self.clock = clock

    def update_customers(self, batch: Batch[UpdateCustomer]) -> None:
        """Set the details each command gives, creating customers no order has named yet."""
        for command in batch:
            with message_context(message_id=command.message_id, order_id=None):
                self._change(
                    command.customer_id, partial(CustomerRecord.update, command=command), create=True
                )
                log.info("customer %s: %s set", command.customer_id, ", ".join(command.details()))

    def forget_customers(self, batch: Batch[ForgetCustomer]) -> None:
        """Erase each customer's personal data from its orders, then from its record."""
        for command in batch:
            with message_context(message_id=command.message_id, order_id=None):
                if self._forget(command):
                    log.info("customer %s forgotten", command.customer_id)
                else:
                    batch.reject(command, f"unknown customer {command.customer_id}")

    def _forget(self, command: ForgetCustomer) -> bool:
        """False for a customer with no record."""
        customer_id = command.customer_id
        record = self.customers.get(customer_id)
        if record is None:
            return False
        if command.message_id in record.recent_operations:
            return True  # a redelivery: the customer may have come back since, with new orders
        # The orders first: the record says the customer is forgotten once all of it is.
        listed = self.customers.orders_of(customer_id)
        self._erase_orders(customer_id, listed)
        if not self._change(
            customer_id, partial(CustomerRecord.forget, command=command, now=self.clock()), create=False
        ):
            return False
        # Orders taken in while this went on are forgotten with the rest.
        erased = set(listed)
        self._erase_orders(
            customer_id,
            [order_id for order_id in self.customers.orders_of(customer_id) if order_id not in erased],
        )
        return True

    def _change(self, customer_id: str, change: Callable[[CustomerRecord], bool], *, create: bool) -> bool:
        """Apply `change` to the customer as stored and write it back, again from a fresh read if
        another command changed the customer meanwhile. False for a customer with no record,
        unless `create`."""
        for _ in range(CONCURRENT_ATTEMPTS):
            read = self.customers.get(customer_id)
            if read is None and not create:
                return False
            record = CustomerRecord(customer_id) if read is None else read.copy()
            if not change(record):
                return True  # applied before: a redelivery
            if self.customers.create(record) if read is None else self.customers.save(record, read):
                return True
        raise ConcurrentUpdate(f"customer {customer_id} kept changing")

    def _erase_orders(self, customer_id: str, order_ids: list[str]) -> None:
        for start in range(0, len(order_ids), ORDERS_PER_ROUND):
            erased = self._erase(customer_id, set(order_ids[start : start + ORDERS_PER_ROUND]))
            self.orders.erase_customer_from_claims(erased)

    def _erase(self, customer_id: str, order_ids: set[str]) -> list[Order]:
        """Erase the customer from these orders; returns them as they now are. An order another
        writer moved first is erased again from a fresh read, like a saga reply (`_advance`)."""
        erased: list[Order] = []
        wanted, fresh = order_ids, False
        for _ in range(CONCURRENT_ATTEMPTS):
            orders = self.orders.refresh(wanted) if fresh else self.orders.get_many(wanted)
            theirs = [
                order
                for order in orders.values()
                if order.customer is not None and order.customer.customer_id == customer_id
            ]
            changed = [order for order in theirs if order.forget_customer()]
            lost = {order.order_id for order in self.orders.save(changed)}
            erased += [order for order in theirs if order.order_id not in lost]
            for order in changed:
                if order.order_id not in lost and order.deadline is not None:
                    # The order's timer is about the version it was set at: set it for this one.
                    self.commands.send(order.deadline_timer(), delay=order.timer_delay())
            if not lost:
                return erased
            wanted, fresh = lost, True
        raise ConcurrentUpdate(f"{len(wanted)} order(s) of customer {customer_id} kept changing")
