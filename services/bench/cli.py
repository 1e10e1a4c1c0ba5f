"""`orderflow bench`: Orderflow (and, with --floor, the floor of its stack) under a load, measured."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from services.bench import report, runner
from services.bench.load import Load
from shared.settings import SERVICES, Settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    load = parser.add_argument_group("load")
    load.add_argument(
        "--orders", type=int, default=1000, help="publish this many orders at once (default 1000)"
    )
    load.add_argument("--rate", type=float, help="or publish this many orders per second ...")
    load.add_argument("--duration", type=float, help="... for this many seconds")
    load.add_argument("--skus", type=int, default=20, help="SKUs the orders spread over (default 20)")
    load.add_argument(
        "--lines", type=int, default=1, help="lines per order, each a different SKU (default 1)"
    )
    load.add_argument(
        "--decline-ratio", type=float, default=0.0, help="share of orders whose payment is declined"
    )
    deployment = parser.add_argument_group("deployment")
    deployment.add_argument("--threads", type=int, default=8, help="threads per worker process (default 8)")
    deployment.add_argument(
        "--processes",
        action="append",
        default=[],
        metavar="SERVICE=N",
        help="processes of a pool, e.g. --processes inventory=2 (default 1 each)",
    )
    deployment.add_argument("--partitions", type=int, default=1, help="inventory partitions (default 1)")
    deployment.add_argument("--batch-size", type=int, help="ORDERFLOW_BATCH_SIZE for the run")
    deployment.add_argument("--log-level", default="INFO", help="the workers' log level (default INFO)")
    deployment.add_argument(
        "--logs", type=Path, help="where the workers' logs go (default: a temporary directory)"
    )
    parser.add_argument(
        "--floor", action="store_true", help="also run the floor of the stack under the same load"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")


def run(settings: Settings, args: argparse.Namespace) -> int:
    if (args.rate is None) != (args.duration is None):
        print("error: --rate and --duration go together")
        return 2
    if args.lines > args.skus:
        print("error: an order's lines are different SKUs: --lines cannot exceed --skus")
        return 2
    processes = {}
    for spec in args.processes:
        service, _, count = spec.partition("=")
        if service not in SERVICES or not count.isdigit() or int(count) < 1:
            print(f"error: --processes takes SERVICE=N with SERVICE one of {', '.join(SERVICES)}: {spec!r}")
            return 2
        processes[service] = int(count)
    work = Load(
        orders=args.orders,
        rate=args.rate,
        duration=args.duration,
        skus=args.skus,
        lines=args.lines,
        decline_ratio=args.decline_ratio,
    )
    deployment = runner.Deployment(
        threads=args.threads,
        processes=processes,
        partitions=args.partitions,
        batch_size=args.batch_size,
        log_level=args.log_level,
    )
    result = runner.run_orderflow(settings, work, deployment, args.logs)
    floor = runner.run_floor(settings, work) if args.floor else None
    if args.json:
        print(json.dumps(report.as_json(result, floor), indent=2))
    else:
        print(report.as_text(result, floor))
    return 0 if result.summary.settled == result.summary.orders else 1
