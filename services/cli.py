"""The `orderflow` command: run worker pools, manage stock, submit orders, track them, report."""

from __future__ import annotations

import argparse
import sys

from shared import logs
from shared.settings import SERVICES, Settings


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orderflow", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    worker = commands.add_parser("worker", help="run one worker pool in the foreground")
    worker.add_argument("service", choices=SERVICES)
    worker.add_argument("--processes", type=_positive, default=1)
    worker.add_argument("--threads", type=_positive, default=8)

    run = commands.add_parser("run", help="run all five worker pools, one process each")
    run.add_argument("--threads", type=_positive, default=8)

    stock = commands.add_parser("stock", help="catalog and stock").add_subparsers(
        dest="action", required=True
    )
    stock_set = stock.add_parser("set", help="create or overwrite a SKU")
    stock_set.add_argument("sku")
    stock_set.add_argument("--quantity", type=_non_negative, required=True)
    stock_set.add_argument("--price", required=True, help="decimal, e.g. 12.50")
    stock_set.add_argument("--name")
    stock_set.add_argument("--low-stock-threshold", type=_non_negative, default=0)
    stock_set.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")
    stock_add = stock.add_parser("add", help="restock a SKU")
    stock_add.add_argument("sku")
    stock_add.add_argument("quantity", type=_positive)
    stock_add.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")
    stock_show = stock.add_parser("show", help="show SKUs and their stock")
    stock_show.add_argument("skus", nargs="*")
    stock_show.add_argument("--json", action="store_true")

    submit = commands.add_parser("submit", help="publish orders to the intake")
    submit.add_argument(
        "source", nargs="?", default="-", help="file with an order, a JSON array or JSON lines"
    )

    status = commands.add_parser("status", help="an order's status and history")
    status.add_argument("order_id")
    status.add_argument("--json", action="store_true")

    sagas = commands.add_parser("sagas", help="sagas").add_subparsers(dest="action", required=True)
    sagas_stuck = sagas.add_parser("stuck", help="pending orders past their step's deadline")
    sagas_stuck.add_argument("--json", action="store_true")

    dlq = commands.add_parser("dlq", help="dead-letter queues").add_subparsers(dest="action", required=True)
    dlq_list = dlq.add_parser("list", help="count per dead-letter queue, or the messages of one")
    dlq_list.add_argument("queue", nargs="?", help="a dead-letter queue, or the queue it serves")
    dlq_list.add_argument("--json", action="store_true")
    dlq_replay = dlq.add_parser("replay", help="send dead letters back to their queue")
    dlq_replay.add_argument("queue")
    which = dlq_replay.add_mutually_exclusive_group(required=True)
    which.add_argument("--id", dest="message_id")
    which.add_argument("--all", action="store_true")
    dlq_purge = dlq.add_parser("purge", help="delete every message of a dead-letter queue")
    dlq_purge.add_argument("queue")

    topology = commands.add_parser("topology", help="the broker's exchanges and queues").add_subparsers(
        dest="action", required=True
    )
    topology.add_parser(
        "upgrade", help="redeclare idle queues an older release declared with other arguments"
    )

    bench = commands.add_parser(
        "bench", help="throughput and latency on the real services (starts its own workers in a sandbox)"
    )
    from services.bench.cli import add_arguments

    add_arguments(bench)

    report = commands.add_parser("report", help="reports").add_subparsers(dest="report", required=True)
    sales = report.add_parser("sales", help="sales: orders, units and revenue")
    sales.add_argument("--json", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = Settings()
    logs.configure(level="WARNING" if args.command not in ("worker", "run") else settings.log_level)

    if args.command == "worker":
        from shared.runtime import run_pool

        return run_pool(args.service, args.processes, args.threads)
    if args.command == "run":
        from shared.runtime import supervise

        return supervise([(service, args.threads, True, 0, 1) for service in SERVICES])
    if args.command == "stock":
        from services.inventory import cli as inventory

        if args.action == "set":
            return inventory.set_stock(
                settings, args.sku, args.quantity, args.price, args.name, args.low_stock_threshold, args.wait
            )
        if args.action == "add":
            return inventory.add_stock(settings, args.sku, args.quantity, args.wait)
        return inventory.show_stock(settings, args.skus, args.json)
    if args.command == "submit":
        from services.order import cli as order

        return order.submit(settings, args.source)
    if args.command == "status":
        from services.order import cli as order

        return order.status(settings, args.order_id, args.json)
    if args.command == "sagas":
        from services.order import cli as order

        return order.stuck(settings, args.json)
    if args.command == "dlq":
        from services import operations

        if args.action == "list":
            return operations.dlq_list(settings, args.queue, args.json)
        if args.action == "replay":
            return operations.dlq_replay(settings, args.queue, args.message_id, args.all)
        return operations.dlq_purge(settings, args.queue)
    if args.command == "topology":
        from services import operations

        return operations.topology_upgrade(settings)
    if args.command == "bench":
        from services.bench.cli import run

        return run(settings, args)
    from services.reporting import cli as reporting

    return reporting.sales(settings, args.json)


if __name__ == "__main__":
    sys.exit(main())
