"""The centre's commands: ingest workers, the API, webhooks, the database, people, API keys, the site registry
and broker credentials.

Connection settings come from the environment: ``PATROLNET_DATABASE_URL`` and ``PATROLNET_MQTT_URL``, or
``<NAME>_FILE`` naming a file that holds the value, so secrets stay out of command lines and the repo.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import fields
from pathlib import Path
from uuid import UUID

from alerts.api import grids_cli, people_cli, report_links
from alerts.core.collector import settle_collector
from alerts.core.models import Role
from alerts.core.settings import optional_setting, setting, wait_for_signal
from alerts.store.timescale import Retention

log = logging.getLogger(__name__)


def cmd_ingest(args: argparse.Namespace) -> int:
    import psycopg

    from alerts.intake.takeover import STALE_AFTER_S, Takeover, drain
    from alerts.intake.watchdog import Watchdog, WatchdogSettings
    from alerts.intake.writer import IngestWorker
    from alerts.store.database import migrate

    database_url = setting("PATROLNET_DATABASE_URL")
    migrate(database_url)
    if args.drain:
        with psycopg.connect(database_url, autocommit=True) as conn:
            return 0 if drain(setting("PATROLNET_MQTT_URL"), database_url, conn, args.drain) else 1
    limits = {"max_payload_bytes": args.max_payload, "session_expiry_s": args.session_expiry}
    worker = IngestWorker(
        setting("PATROLNET_MQTT_URL"),
        database_url,
        name=args.name,
        batch_size=args.batch,
        flush_s=args.flush_ms / 1000,
        **{k: v for k, v in limits.items() if v is not None},
    )
    takeover_s = STALE_AFTER_S if args.takeover_after is None else args.takeover_after
    takeover = Takeover(setting("PATROLNET_MQTT_URL"), database_url, worker.name, takeover_s) if takeover_s else None
    watch = {"missed_heartbeats": args.offline_after, "heartbeat_s": args.heartbeat_s}
    settings = WatchdogSettings(**{k: v for k, v in watch.items() if v is not None})
    watchdog = Watchdog(database_url, worker.name, settings, lambda: (worker.last_batch_at, dict(worker.counts)))
    worker.start()
    watchdog.start()
    if takeover:
        takeover.start()
    settle_collector()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    # A dead thread would leave a process that looks up but stores nothing: exit for the service manager.
    while not stop.wait(1.0):
        if not (worker.alive() and watchdog.alive() and (takeover is None or takeover.alive())):
            log.error("ingest %s: a worker thread died; exiting so that the service manager restarts it", worker.name)
            return 1
    if takeover:
        takeover.stop()
    watchdog.stop()
    worker.stop()
    log.info("ingest stopped: %s", dict(worker.counts))
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    import uvicorn

    from alerts.store.database import migrate

    migrate(setting("PATROLNET_DATABASE_URL"))
    # An import string and a factory, so that each of several worker processes builds its own app.
    uvicorn.run(
        "alerts.api.app:app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        access_log=args.access_log,
        log_level="info",
    )
    return 0


def cmd_webhooks(args: argparse.Namespace) -> int:
    from alerts.notify.webhooks import WebhookDispatcher
    from alerts.store.database import migrate

    database_url = setting("PATROLNET_DATABASE_URL")
    migrate(database_url)
    dispatcher = WebhookDispatcher(database_url, name=args.name, public_url=setting("PATROLNET_PUBLIC_URL", ""))
    dispatcher.start()
    wait_for_signal()
    dispatcher.stop()
    log.info("webhooks stopped: %s", dict(dispatcher.counts))
    return 0


def cmd_shops_remind(args: argparse.Namespace) -> int:
    import asyncio

    from alerts.notify.reminders import ReminderSender, due, remind_all
    from alerts.notify.webhooks import TargetPolicy

    database_url = setting("PATROLNET_DATABASE_URL")
    sender = ReminderSender(TargetPolicy.from_env(), setting("PATROLNET_PUBLIC_URL", ""))
    sent = remind_all(database_url, sender, asyncio.run(due(database_url, args.community)))
    for s in sent:
        print(f"{s.format} webhook {s.webhook_id}: {s.error or 'taken'}")
    return 1 if any(s.error for s in sent) else 0


def _retention(args: argparse.Namespace):
    from dataclasses import fields

    from alerts.store.timescale import Retention

    try:
        return Retention.from_env(**{f.name: getattr(args, f"retention_{f.name}") for f in fields(Retention)})
    except ValueError as exc:
        raise SystemExit(f"patrolnet: {exc}") from exc


def cmd_db_migrate(args: argparse.Namespace) -> int:
    from alerts.store.database import migrate

    applied = migrate(setting("PATROLNET_DATABASE_URL"), _retention(args))
    print("applied: " + ", ".join(applied) if applied else "the schema is up to date")
    return 0


def cmd_db_prune(args: argparse.Namespace) -> int:
    import psycopg

    from alerts.api.http import ApiSettings
    from alerts.store import clips, timescale

    days = clips.retention_days(optional_setting("PATROLNET_CLIP_RETENTION") or "")
    print(f"clips: {clips.prune_clips(setting('PATROLNET_DATABASE_URL'), Path(ApiSettings.from_env().clip_dir), days)}")
    with psycopg.connect(setting("PATROLNET_DATABASE_URL"), autocommit=True) as conn:
        if timescale.enabled(conn):
            print("TimescaleDB's retention policies drop old chunks; nothing to do")
            return 0
        for sql, params in timescale.prune_statements(_retention(args)):
            print(f"{sql.split(' WHERE')[0]}: {conn.execute(sql, params).rowcount} rows")
    return 0


def cmd_apikey_create(args: argparse.Namespace) -> int:
    from alerts.auth import Principal, create_key

    principal = Principal(
        name=args.name,
        role=args.role,
        sub_district=args.sub_district,
        community=args.community,
        grid=args.grid,
        site=args.site,
    )
    print(create_key(setting("PATROLNET_DATABASE_URL"), principal))
    return 0


def cmd_apikey_list(args: argparse.Namespace) -> int:
    import psycopg

    with psycopg.connect(setting("PATROLNET_DATABASE_URL")) as conn:
        rows = conn.execute(
            "SELECT id, role, name, concat_ws('/', sub_district, community, grid, site), created_at, revoked_at"
            " FROM api_keys ORDER BY created_at"
        ).fetchall()
    for id_, role, name, scope, created, revoked in rows:
        state = f"revoked {revoked:%Y-%m-%d %H:%M}" if revoked else "active"
        print(f"{id_}  {role:<9} {state:<24} {scope or 'everywhere':<40} {name} (made {created:%Y-%m-%d})")
    return 0


def cmd_apikey_revoke(args: argparse.Namespace) -> int:
    import psycopg

    with psycopg.connect(setting("PATROLNET_DATABASE_URL")) as conn:
        revoked = conn.execute(
            "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING name", (args.id,)
        ).fetchone()
    if revoked is None:
        print(f"patrolnet: no active key {args.id}", file=sys.stderr)
        return 1
    print(f"revoked {revoked[0]!r}; API processes stop accepting it within PATROLNET_KEY_CACHE_S (5 s)")
    return 0


def _broker_secret(args: argparse.Namespace, password: str) -> None:
    """The new password, printed once, or written to a file only its owner reads."""
    if args.password_file is None:
        print(password)
        return
    fd = os.open(args.password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        file.write(password + "\n")
    print(f"password written to {args.password_file}", file=sys.stderr)


def cmd_site(args: argparse.Namespace) -> int:
    import psycopg
    from pydantic import ValidationError

    from alerts.store import sites

    try:
        with psycopg.connect(setting("PATROLNET_DATABASE_URL"), autocommit=True) as conn:
            if args.site_command == "add":
                site = sites.SiteIn(site=args.site, name=args.name, sub_district=args.sub_district,
                                    community=args.community, grid=args.grid)  # fmt: skip
                created = sites.add_site(conn, site)
                print(f"{'registered' if created else 'changed'} {site.site}: {site.sub_district}/{site.community}/"
                      f"{site.grid}; ingest takes it within {sites.MAX_AGE_S:g} s")  # fmt: skip
            elif args.site_command == "remove":
                if not sites.remove_site(conn, args.site):
                    raise ValueError(f"no site {args.site!r}")
                print(f"removed {args.site} and its nodes' registrations; ingest refuses their messages")
            else:
                for found in sites.list_sites(conn):
                    place = f"{found.sub_district}/{found.community}/{found.grid}"
                    print(f"{found.site:<24} {place:<40} {found.name:<30} nodes: {', '.join(found.nodes) or '-'}")
        return 0
    except ValidationError as exc:
        errors = (f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False))
        print(f"patrolnet site: {'; '.join(errors)}", file=sys.stderr)
        return 1
    except (ValueError, psycopg.Error) as exc:
        print(f"patrolnet site: {exc}", file=sys.stderr)
        return 1


@contextmanager
def _registration(args: argparse.Namespace) -> Iterator[None]:
    """Registers an added node under its site in the database (a site that is not registered, or a node of
    another site, is refused before the broker is asked), or removes a removed client's registration, in a
    transaction committed only when the broker's command in the block succeeds."""
    import psycopg

    from alerts.core.settings import optional_setting
    from alerts.intake.broker_auth import checked_name
    from alerts.store import sites

    adding = args.broker_command == "add-node"
    database_url = setting("PATROLNET_DATABASE_URL") if adding else optional_setting("PATROLNET_DATABASE_URL")
    if database_url is None:
        print("PATROLNET_DATABASE_URL is not set: a node's registration stays (patrolnet site list)", file=sys.stderr)
        yield
        return
    try:
        conn = psycopg.connect(database_url)
    except psycopg.Error as exc:
        raise ValueError(f"the site registry: {exc}") from exc
    with conn:  # commits when the block succeeds, rolls back when it raises
        try:
            if adding:
                sites.add_node(conn, checked_name("site", args.site), checked_name("node", args.node))
            elif sites.remove_node(conn, args.username):
                print(f"{args.username}: no longer registered to its site", file=sys.stderr)
        except psycopg.Error as exc:
            raise ValueError(f"the site registry: {exc}") from exc
        yield


def cmd_broker(args: argparse.Namespace) -> int:
    from pathlib import Path

    from alerts.core.mqtt import parse_url
    from alerts.intake.broker_auth import BrokerAdmin, BrokerAdminError, new_password, write_initial_config

    try:
        if args.broker_command == "init":
            owner, ingest = (parse_url(setting(name)) for name in ("PATROLNET_BROKER_ADMIN_URL", "PATROLNET_MQTT_URL"))
            if not (owner.username and owner.password and ingest.username and ingest.password):
                raise ValueError("both URLs need a username and a password: mqtt://user:password@host:port")
            if not write_initial_config(
                Path(args.config), (owner.username, owner.password), (ingest.username, ingest.password)
            ):
                print(f"{args.config} exists: left as it is (the broker owns it now)", file=sys.stderr)
            return 0
        registering = args.broker_command in ("add-node", "remove")
        with (
            _registration(args) if registering else nullcontext(),
            BrokerAdmin(setting("PATROLNET_BROKER_ADMIN_URL")) as admin,
        ):
            password = new_password()
            if args.broker_command == "add-node":
                admin.add_node(args.site, args.node, password, args.client_id)
            elif args.broker_command == "add-ingest":
                admin.add_ingest(args.name, password)
            elif args.broker_command == "rotate":
                admin.rotate(args.username, password)
            elif args.broker_command == "remove":
                admin.remove(args.username)
                return 0
            elif args.broker_command == "sync-roles":
                for site, added in admin.sync_roles().items():
                    print(f"{site}: {', '.join(added) if added else 'up to date'}")
                return 0
            else:
                print("\n".join(admin.clients()))
                return 0
        _broker_secret(args, password)
        return 0
    except (ValueError, BrokerAdminError) as exc:
        print(f"patrolnet broker: {exc}", file=sys.stderr)
        return 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    """The centre's subcommands on the ``patrolnet`` parser."""
    ingest = sub.add_parser("ingest", help="central ingest worker: MQTT uplink into the store")
    ingest.add_argument(
        "--name",
        default=None,
        help="worker name: its MQTT session; keep it across restarts, one per worker (default ingest-<hostname>)",
    )
    ingest.add_argument("--batch", type=int, default=500, help="messages per transaction at most")
    ingest.add_argument(
        "--flush-ms", type=float, default=0, help="how long to wait for a batch to fill; 0: write what is queued"
    )
    ingest.add_argument("--max-payload", type=int, help="bytes; larger messages are dead letters (default 4 MB)")
    ingest.add_argument(
        "--session-expiry", type=int, help="seconds the broker keeps this worker's session while away (default a day)"
    )
    ingest.add_argument(
        "--offline-after", type=float, help="a node is offline after this many heartbeat intervals (default 3)"
    )
    ingest.add_argument(
        "--heartbeat-s", type=float, help="a node's heartbeat interval until two heartbeats measured it (default 30)"
    )
    ingest.add_argument(
        "--drain",
        metavar="NAME",
        help="retire worker NAME (stopped for good): store what waits in its session, end the session, exit",
    )
    ingest.add_argument(
        "--takeover-after",
        type=float,
        help="drain the session of a worker whose liveness is this many seconds old (default 10; 0: never)",
    )
    ingest.set_defaults(func=cmd_ingest)

    api = sub.add_parser("api", help="serve the alert API and its page")
    api.add_argument("--host", default="127.0.0.1")
    api.add_argument("--port", type=int, default=8000)
    api.add_argument("--workers", type=int, default=1, help="worker processes (about one per core)")
    api.add_argument("--access-log", action=argparse.BooleanOptionalAction, default=True, help="log every request")
    api.set_defaults(func=cmd_api)

    hooks = sub.add_parser("webhooks", help="deliver webhooks: POST alert changes to registered URLs")
    hooks.add_argument("--name", default=f"webhooks-{os.getpid()}", help="dispatcher name, for the logs")
    hooks.set_defaults(func=cmd_webhooks)

    shops = sub.add_parser("shops", help="shops on duty").add_subparsers(dest="shops_command", required=True)
    remind = shops.add_parser("remind", help="remind this week's shops on duty (hooks that took it are skipped)")
    remind.add_argument("--community", help="only this community")
    remind.set_defaults(func=cmd_shops_remind)

    db = sub.add_parser("db", help="the store").add_subparsers(dest="db_command", required=True)
    migrate = db.add_parser("migrate", help="apply the migrations, and the TimescaleDB plan where available")
    migrate.set_defaults(func=cmd_db_migrate)
    prune = db.add_parser("prune", help="plain PostgreSQL: delete rows older than their retention period")
    prune.set_defaults(func=cmd_db_prune)
    for command in (migrate, prune):
        for name in (f.name for f in fields(Retention)):
            command.add_argument(
                f"--retention-{name.replace('_', '-')}",
                metavar="PERIOD",
                help=f"e.g. '90 days' (env PATROLNET_RETENTION_{name.upper()})",
            )

    people_cli.add_commands(sub)
    grids_cli.add_commands(sub)
    report_links.add_commands(sub)

    apikey = sub.add_parser("apikey", help="API keys").add_subparsers(dest="apikey_command", required=True)
    create = apikey.add_parser("create", help="make a key; it is printed once")
    create.add_argument("--name", required=True, help="who holds it, e.g. 'district fire desk'")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    for level in ("sub-district", "community", "grid", "site"):
        create.add_argument(f"--{level}", help=f"limit the key to this {level}")
    create.set_defaults(func=cmd_apikey_create)
    apikey.add_parser("list", help="the keys' ids, roles and scopes").set_defaults(func=cmd_apikey_list)
    revoke = apikey.add_parser("revoke", help="revoke a key by its id (see list)")
    revoke.add_argument("id", type=UUID)
    revoke.set_defaults(func=cmd_apikey_revoke)

    broker = sub.add_parser(
        "broker", help="broker credentials and ACLs (Mosquitto dynamic security; env PATROLNET_BROKER_ADMIN_URL)"
    ).add_subparsers(dest="broker_command", required=True)
    init = broker.add_parser(
        "init",
        help="the plugin's file before the broker's first start: admin and ingest clients, from the "
        "URLs in PATROLNET_BROKER_ADMIN_URL and PATROLNET_MQTT_URL",
    )
    init.add_argument("--config", required=True, help="e.g. /var/lib/mosquitto/dynamic-security.json")
    add_node = broker.add_parser(
        "add-node",
        help="an edge node: publish under its site, read its commands; registered to its site in the database "
        "too (PATROLNET_DATABASE_URL; the site first: patrolnet site add)",
    )
    add_node.add_argument("--site", required=True, help="the site id of the node's config")
    add_node.add_argument("--node", required=True, help="the node's node_id, its broker username")
    add_node.add_argument(
        "--client-id", help="the only MQTT client id it may use; default its uplink's, patrolnet-edge-<node>-uplink"
    )
    add_ingest = broker.add_parser("add-ingest", help="an ingest client: join the share group, read the uplink")
    add_ingest.add_argument("--name", required=True, help="broker username")
    rotate = broker.add_parser("rotate", help="a new password; the old one stops working at once")
    remove = broker.add_parser(
        "remove", help="delete a client; its connections are closed (a node's registration goes too)"
    )
    for command in (rotate, remove):
        command.add_argument("username")
    for command in (add_node, add_ingest, rotate):
        command.add_argument("--password-file", help="write the new password here (mode 0600) instead of printing it")
    listing = broker.add_parser("list", help="the broker's clients")
    sync = broker.add_parser("sync-roles", help="give every site's role the uplink channels of this release")
    for command in (init, add_node, add_ingest, rotate, remove, listing, sync):
        command.set_defaults(func=cmd_broker)

    site = sub.add_parser(
        "site", help="the site registry: each site's place and nodes, which ingest takes every message's place from"
    ).add_subparsers(dest="site_command", required=True)
    site_add = site.add_parser("add", help="register a site's place, or change it")
    site_add.add_argument("site", help="the site id: its nodes' site.id")
    site_add.add_argument("--sub-district", required=True)
    site_add.add_argument("--community", required=True)
    site_add.add_argument("--grid", required=True)
    site_add.add_argument("--name", default="", help="what people call it")
    site_remove = site.add_parser("remove", help="remove a site and its nodes' registrations")
    site_remove.add_argument("site")
    site_list = site.add_parser("list", help="the registered sites, their places and nodes")
    for command in (site_add, site_remove, site_list):
        command.set_defaults(func=cmd_site)
