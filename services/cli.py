"""The `orderflow` command: run worker pools, manage stock, submit orders, track them, report.

Bad input, a bad setting or a service that is down ends a command with one line on stderr and the
exit code of its error (shared/errors.py): 2 for input and settings, 4 for RabbitMQ or the store out
of reach; workers log that line. A traceback means a bug.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import re
import sys
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from shared import logs
from shared.contracts.base import SKU_PATTERN
from shared.errors import CommandError, ServiceUnavailable, SettingError, UsageError
from shared.settings import CONFIG_VARIABLE, SERVICES, Settings, load_settings, masked

log = logging.getLogger("orderflow")


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


def _day(text: str) -> str:
    """A UTC day, YYYY-MM-DD, as the finance report names days."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").date().isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError("a date, YYYY-MM-DD") from None


def _sku(text: str) -> str:
    if not re.fullmatch(SKU_PATTERN, text):
        raise argparse.ArgumentTypeError("1 to 64 of A-Z a-z 0-9 . _ -, starting with a letter or digit")
    return text


def _name(text: str) -> str:
    if not 1 <= len(text) <= 200:
        raise argparse.ArgumentTypeError("a name is 1 to 200 characters")
    return text


def _items(text: str) -> list[dict[str, object]]:
    try:
        items = json.loads(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"not JSON: {e}") from e
    if not isinstance(items, list) or not items or not all(isinstance(item, dict) for item in items):
        raise argparse.ArgumentTypeError('a JSON list of {"sku": ..., "quantity": ...}')
    return items


def _request_fields(args: argparse.Namespace) -> dict[str, object]:
    """The body of an `orderflow orders` request, as the intake's contract has it."""
    if args.action == "cancel":
        return {"reason": args.reason}
    if args.action == "amend":
        if (args.method is None) != (args.token is None):
            raise UsageError("--method and --token go together")
        payment = {"payment": {"method": args.method, "token": args.token}} if args.method else {}
        return {"items": args.items, **payment}
    if args.action == "ship":
        return {key: value for key in ("carrier", "tracking") if (value := getattr(args, key)) is not None}
    return {}


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
    stock_set.add_argument("sku", type=_sku)
    stock_set.add_argument("--quantity", type=_non_negative, required=True)
    stock_set.add_argument("--price", required=True, help="decimal, e.g. 12.50")
    stock_set.add_argument("--name", type=_name, help="kept if omitted (a new SKU: the SKU itself)")
    stock_set.add_argument("--low-stock-threshold", type=_non_negative, help="kept if omitted (a new SKU: 0)")
    stock_set.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")
    stock_add = stock.add_parser("add", help="restock a SKU")
    stock_add.add_argument("sku", type=_sku)
    stock_add.add_argument("quantity", type=_positive)
    stock_add.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")
    stock_show = stock.add_parser("show", help="show SKUs and their stock")
    stock_show.add_argument("skus", nargs="*")
    stock_show.add_argument("--json", action="store_true")

    submit = commands.add_parser("submit", help="publish orders to the intake")
    submit.add_argument(
        "source", nargs="?", default="-", help="file with an order, a JSON array or JSON lines"
    )

    orders = commands.add_parser("orders", help="requests about placed orders").add_subparsers(
        dest="action", required=True
    )
    orders_cancel = orders.add_parser("cancel", help="cancel an order before it ships (refunded if paid)")
    orders_cancel.add_argument("--reason", type=_name, default="customer_request")
    orders_amend = orders.add_parser("amend", help="change an order's items before it ships")
    orders_amend.add_argument(
        "--items", type=_items, required=True, help='the full new list: [{"sku", "quantity"}]'
    )
    orders_amend.add_argument(
        "--method", choices=("credit_card", "alipay", "wechat_pay"), help="pay with this"
    )
    orders_amend.add_argument("--token", help="the new payment method's token (with --method)")
    orders_ship = orders.add_parser("ship", help="a confirmed order left the warehouse")
    orders_ship.add_argument("--carrier", type=_name)
    orders_ship.add_argument("--tracking", type=_name)
    orders.add_parser("complete", help="a shipped order arrived and is done")
    for action in (orders_cancel, orders_amend, orders_ship, orders.choices["complete"]):
        action.add_argument("order_id")
        action.add_argument("--wait", type=float, default=30.0, help="seconds to wait for the outcome")
        action.add_argument("--json", action="store_true")

    status = commands.add_parser("status", help="an order's status and history")
    status.add_argument("order_id")
    status.add_argument("--json", action="store_true")

    customers = commands.add_parser("customers", help="customers: their details and orders").add_subparsers(
        dest="action", required=True
    )
    customers_set = customers.add_parser("set", help="set a customer's details (creating the customer)")
    customers_set.add_argument("customer_id")
    for detail in ("name", "email", "phone", "address"):
        customers_set.add_argument(f"--{detail}", help="kept if omitted")
    customers_set.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")
    customers_show = customers.add_parser("show", help="a customer's details and orders")
    customers_show.add_argument("customer_id")
    customers_show.add_argument("--json", action="store_true")
    customers_list = customers.add_parser("list", help="every customer")
    customers_list.add_argument("--json", action="store_true")
    customers_forget = customers.add_parser(
        "forget", help="erase a customer's personal data from it and from its orders"
    )
    customers_forget.add_argument("customer_id")
    customers_forget.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the change")

    payments = commands.add_parser("payments", help="payments").add_subparsers(dest="action", required=True)
    payments_show = payments.add_parser("show", help="an order's payment, as the gateway answered for it")
    payments_show.add_argument("order_id")
    payments_show.add_argument("--json", action="store_true")

    sagas = commands.add_parser("sagas", help="sagas").add_subparsers(dest="action", required=True)
    sagas_stuck = sagas.add_parser(
        "stuck", help="pending orders that look stuck, oldest first, with their step and attempts"
    )
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
    dlq_purge.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    topology = commands.add_parser("topology", help="the broker's exchanges and queues").add_subparsers(
        dest="action", required=True
    )
    topology.add_parser(
        "upgrade", help="redeclare idle queues an older release declared with other arguments"
    )
    topology.add_parser("declare", help="declare every exchange and queue of Orderflow, as the operator")
    topology.add_parser(
        "definitions", help="print the broker definitions (topology, role users, permissions) as JSON"
    )

    broker = commands.add_parser("broker", help="the broker's users and permissions").add_subparsers(
        dest="action", required=True
    )
    broker_setup = broker.add_parser(
        "setup", help="load the definitions into the broker and give each role user its password"
    )
    broker_setup.add_argument(
        "--management-url",
        help="RabbitMQ's management API, as an administrator (default: ORDERFLOW_AMQP_URL's user, :15672)",
    )
    broker_setup.add_argument(
        "--definitions", type=Path, help="a definitions file (default: made from the settings)"
    )
    broker_credentials = broker_setup.add_mutually_exclusive_group(required=True)
    broker_credentials.add_argument(
        "--secrets-dir",
        type=Path,
        help="a directory with each role's URL in a file named ORDERFLOW_AMQP_URL_<ROLE>",
    )
    broker_credentials.add_argument(
        "--env-file",
        type=Path,
        help="read the role URLs from this file; new roles get random passwords, written back",
    )

    migrate = commands.add_parser(
        "migrate", help="rewrite every stored document older than its current schema version"
    )
    migrate.add_argument(
        "--dry-run", action="store_true", help="count what would be upgraded, change nothing"
    )

    bench = commands.add_parser(
        "bench", help="throughput and latency on the real services (starts its own workers in a sandbox)"
    )
    from services.bench.cli import add_arguments

    add_arguments(bench)

    _add_support(commands)

    config = commands.add_parser(
        "config", help="settings: where each comes from; a file checked"
    ).add_subparsers(dest="action", required=True)
    config_show = config.add_parser("show", help="every effective setting, its value and where it came from")
    config_show.add_argument("--json", action="store_true")
    config_check = config.add_parser("check", help="check a configuration file and the environment")
    config_check.add_argument("file", nargs="?", help="the file (default: --config, or ORDERFLOW_CONFIG)")

    backup = commands.add_parser(
        "backup", help="write every worker's database to DIR; `backup verify DIR` checks one"
    )
    backup.add_argument("words", nargs="+", metavar="[verify] DIR")
    restore = commands.add_parser("restore", help="load a backup into the empty databases of this prefix")
    restore.add_argument("directory", metavar="DIR")

    report = commands.add_parser("report", help="reports").add_subparsers(dest="report", required=True)
    sales = report.add_parser("sales", help="sales: orders, units and revenue")
    sales.add_argument("--json", action="store_true")
    sales.add_argument("--html", type=Path, metavar="FILE", help="also write the report as an HTML page")
    finance = report.add_parser("finance", help="money captured and refunded per day and payment method")
    finance.add_argument(
        "--from", dest="first_day", type=_day, metavar="DATE", help="YYYY-MM-DD (UTC), included"
    )
    finance.add_argument(
        "--to", dest="last_day", type=_day, metavar="DATE", help="YYYY-MM-DD (UTC), included"
    )
    finance_output = finance.add_mutually_exclusive_group()
    finance_output.add_argument("--json", dest="output", action="store_const", const="json", default="text")
    finance_output.add_argument("--csv", dest="output", action="store_const", const="csv")
    finance.add_argument("--html", type=Path, metavar="FILE", help="also write the report as an HTML page")
    _add_config_option(parser)
    return parser


def _add_config_option(parser: argparse.ArgumentParser, *, top: bool = True) -> None:
    """`--config FILE` before the command or after any part of it (`orderflow --config F status X`,
    `orderflow status X --config F`)."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        # A subcommand's default would overwrite a --config given before it.
        default=None if top else argparse.SUPPRESS,
        help=f"a TOML file of settings, below the environment's (default: ${CONFIG_VARIABLE})",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                _add_config_option(subparser, top=False)


def _text(text: str) -> str:
    if not 1 <= len(text) <= 4000:
        raise argparse.ArgumentTypeError("1 to 4000 characters")
    return text


def _add_support(commands: argparse._SubParsersAction) -> None:
    """`orderflow support ...`: cases about orders, decided by the order worker."""
    support = commands.add_parser("support", help="support cases: questions, returns, exchanges")
    actions = support.add_subparsers(dest="action", required=True)
    wait = {"type": float, "default": 15.0, "help": "seconds to wait for the order worker"}
    support_open = actions.add_parser("open", help="open a case about an order; prints its id")
    support_open.add_argument("order_id")
    support_open.add_argument("--kind", choices=("question", "return", "exchange"), required=True)
    support_open.add_argument("--text", type=_text, required=True)
    support_open.add_argument(
        "--lines", help='units returned, JSON: [{"sku": "SKU-1", "quantity": 1}] (default: all the lines)'
    )
    support_open.add_argument("--replacement", help="the units sent instead (an exchange), JSON as --lines")
    support_open.add_argument("--json", action="store_true")
    support_open.add_argument("--wait", **wait)
    support_list = actions.add_parser("list", help="cases, oldest first")
    support_list.add_argument("--open", action="store_true", help="only cases not closed")
    support_list.add_argument("--json", action="store_true")
    support_show = actions.add_parser("show", help="a case and its conversation")
    support_show.add_argument("case_id")
    support_show.add_argument("--json", action="store_true")
    support_reply = actions.add_parser("reply", help="answer the customer")
    support_reply.add_argument("case_id")
    support_reply.add_argument("--text", type=_text, required=True)
    support_reply.add_argument("--wait", **wait)
    support_close = actions.add_parser("close", help="close a case")
    support_close.add_argument("case_id")
    support_close.add_argument("--note", type=_text)
    support_close.add_argument("--wait", **wait)
    support_approve = actions.add_parser("approve", help="have the order carry out a return or an exchange")
    support_approve.add_argument("case_id")
    support_approve.add_argument("--wait", **wait)


def _backup(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from services import backup

    if args.command == "restore":
        return backup.restore(settings, Path(args.directory))
    if args.words == ["verify"]:
        raise UsageError("usage: orderflow backup verify DIR")
    if len(args.words) == 1:
        return backup.backup(settings, Path(args.words[0]))
    if len(args.words) == 2 and args.words[0] == "verify":
        return backup.verify(Path(args.words[1]))
    raise UsageError("usage: orderflow backup DIR, or orderflow backup verify DIR")


def _support(args: argparse.Namespace, settings: Settings) -> int:
    from services.order import support_cli as support

    if args.action == "open":
        return support.open_case(
            settings, args.order_id, args.kind, args.text, args.lines, args.replacement, args.json, args.wait
        )
    if args.action == "list":
        return support.list_cases(settings, args.open, args.json)
    if args.action == "show":
        return support.show(settings, args.case_id, args.json)
    if args.action == "reply":
        return support.reply(settings, args.case_id, args.text, args.wait)
    if args.action == "close":
        return support.close(settings, args.case_id, args.note, args.wait)
    return support.approve(settings, args.case_id, args.wait)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)  # a bad command line exits 2, with the usage
    serving = args.command in ("worker", "run")
    logs.configure(level="INFO" if serving else "WARNING")
    if isinstance(sys.stdout, io.TextIOWrapper):
        # Whatever a dead letter or an order holds, printing it never fails on the terminal's encoding.
        sys.stdout.reconfigure(errors="backslashreplace")
    settings: Settings | None = None
    # The file goes into the environment: for this command, and for every process it starts (the
    # pools of `worker` and `run`) to read the same settings.
    config = args.file if args.command == "config" and args.action == "check" and args.file else args.config
    previous = os.environ.get(CONFIG_VARIABLE)
    if config:
        os.environ[CONFIG_VARIABLE] = os.path.abspath(config)
    try:
        settings = load_settings()
        if serving:
            logs.configure(level=settings.log_level)
        return _dispatch(args, settings)
    except KeyboardInterrupt:
        return 130
    except Exception as e:
        error = command_error(e, settings, "upstream" if args.command == "submit" else "operator")
        if error is None:
            raise  # a bug: its traceback is worth having
        if serving:
            log.error("%s", error)
        else:
            print(f"orderflow: {error}", file=sys.stderr)
        return error.exit_code
    finally:
        if previous is None:
            os.environ.pop(CONFIG_VARIABLE, None)
        else:
            os.environ[CONFIG_VARIABLE] = previous


def command_error(error: Exception, settings: Settings | None, role: str = "operator") -> CommandError | None:
    """What to tell a person about `error`: bad input, a bad setting, RabbitMQ (as `role`'s user)
    or the store out of reach; None for anything else (a bug). Never a password."""
    import ssl

    import amqp.exceptions
    import kombu.exceptions
    import pydantic
    import pymongo.errors

    from shared.messaging.publisher import PublishFailed

    own_url = settings is not None and settings.has_own_amqp_url(role)
    variable = f"ORDERFLOW_AMQP_URL_{role.upper()}" if own_url else "ORDERFLOW_AMQP_URL"
    broker = f"RabbitMQ at {masked(settings.amqp_url_of(role))}" if settings else "RabbitMQ"
    store = f"the store at {masked(settings.mongo_url)}" if settings else "the store"
    reason = masked(str(error)).split(" (configured timeouts")[0] or type(error).__name__
    if isinstance(error, CommandError):
        return error
    if isinstance(error, amqp.exceptions.AccessRefused | amqp.exceptions.NotAllowed):
        refusal = getattr(error, "reply_text", None) or reason
        # A wrong password, or a user without the rights the command needs (another role's URL).
        return SettingError(f"{broker} refused: {refusal}: check {variable}")
    if isinstance(error, pymongo.errors.ConfigurationError) or (
        isinstance(error, pymongo.errors.OperationFailure) and error.code == 18  # authentication
    ):
        return SettingError(f"{store}: {reason}: check ORDERFLOW_MONGO_URL")
    if isinstance(error, pymongo.errors.ConnectionFailure):
        return ServiceUnavailable(f"cannot reach {store} (ORDERFLOW_MONGO_URL): {reason}")
    untrusted = _cause_of(error, ssl.SSLCertVerificationError)
    if untrusted is not None:  # not the broker being away: retrying cannot help
        return SettingError(
            f"{broker}: its certificate is not trusted ({untrusted.verify_message}): check "
            f"ORDERFLOW_AMQP_CA_FILE, and the host name in {variable}"
        )
    if isinstance(error, OSError) and error.filename is not None:
        return UsageError(f"{error.filename}: {error.strerror}")
    # pymongo wraps its own socket errors: any other connection error is the broker's.
    if isinstance(
        error,
        kombu.exceptions.OperationalError | amqp.exceptions.ConnectionError | PublishFailed | OSError,
    ):
        return ServiceUnavailable(f"cannot reach {broker} ({variable}): {reason}")
    if isinstance(error, UnicodeDecodeError):
        return UsageError(f"the input is not UTF-8 text ({reason})")
    if isinstance(error, pydantic.ValidationError):
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        return UsageError(f"invalid input: {problems}")
    return None


E = TypeVar("E", bound=BaseException)


def _cause_of(error: BaseException, kind: type[E]) -> E | None:
    """`error`, or the error it was raised from (kombu and our publisher wrap a TLS error), if `kind`."""
    for _ in range(10):
        if isinstance(error, kind):
            return error
        cause = error.__cause__ or error.__context__
        if cause is None:
            return None
        error = cause
    return None


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "worker":
        from shared.runtime import run_pool

        return run_pool(settings, args.service, args.processes, args.threads)
    if args.command == "run":
        from shared.runtime import PoolProcess, supervise

        return supervise(
            [
                PoolProcess(service, args.threads, settings.metrics_port_of(service, all_pools=True))
                for service in SERVICES
            ]
        )
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
    if args.command == "orders":
        from services.order import cli as order

        return order.request(
            settings, args.action, args.order_id, _request_fields(args), args.wait, args.json
        )
    if args.command == "status":
        from services.order import cli as order

        return order.status(settings, args.order_id, args.json)
    if args.command == "customers":
        from services.order import customers_cli as customers

        if args.action == "set":
            details = {"name": args.name, "email": args.email, "phone": args.phone, "address": args.address}
            return customers.set_customer(settings, args.customer_id, details, args.wait)
        if args.action == "show":
            return customers.show_customer(settings, args.customer_id, args.json)
        if args.action == "list":
            return customers.list_customers(settings, args.json)
        return customers.forget_customer(settings, args.customer_id, args.wait)
    if args.command == "payments":
        from services.payment import cli as payment

        return payment.show(settings, args.order_id, args.json)
    if args.command == "sagas":
        from services.order import cli as order

        return order.stuck(settings, args.json)
    if args.command == "dlq":
        from services import operations

        if args.action == "list":
            return operations.dlq_list(settings, args.queue, args.json)
        if args.action == "replay":
            return operations.dlq_replay(settings, args.queue, args.message_id, args.all)
        return operations.dlq_purge(settings, args.queue, args.yes)
    if args.command == "topology":
        from services import broker_setup, operations

        if args.action == "declare":
            return operations.topology_declare(settings)
        if args.action == "definitions":
            return broker_setup.print_definitions(settings)
        return operations.topology_upgrade(settings)
    if args.command == "broker":
        from services import broker_setup

        return broker_setup.setup(
            settings, args.management_url, args.definitions, args.secrets_dir, args.env_file
        )
    if args.command == "migrate":
        from services.migrate import migrate_all

        return migrate_all(settings, args.dry_run)
    if args.command == "support":
        return _support(args, settings)
    if args.command == "config":
        from services import config_cli

        if args.action == "show":
            return config_cli.show(settings, args.json)
        return config_cli.check()
    if args.command in ("backup", "restore"):
        return _backup(args, settings)
    if args.command == "bench":
        from services.bench.cli import run

        return run(settings, args)
    from services.reporting import cli as reporting

    if args.report == "finance":
        if args.first_day and args.last_day and args.first_day > args.last_day:
            raise UsageError(f"--from {args.first_day} is after --to {args.last_day}")
        return reporting.finance(settings, args.first_day, args.last_day, args.output, args.html)
    return reporting.sales(settings, args.json, args.html)


if __name__ == "__main__":
    sys.exit(main())
