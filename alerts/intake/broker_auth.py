"""Broker credentials and ACLs, kept by Mosquitto's dynamic-security plugin.

Each edge node gets a username and a random password and the role of its site, which lets it
publish only ``patrolnet/v1/<site>/<channel>`` (the uplink channels; its retained status and
its last will are two of them) and subscribe and read only ``patrolnet/v1/<site>/commands/#`` (confirmations and
snapshot commands).
Ingest workers get a role that may join ``$share/patrolnet-ingest/patrolnet/v1/+/+`` and read
the uplink, and publish under ``patrolnet/v1/+/commands/#`` (the confirmations of what it stored, on each
node's ``confirm_topic``, and snapshot commands); nobody else may subscribe to that filter. Everything else
is denied by default.

Why the plugin and not ``password_file`` + ``acl_file``: Mosquitto 2.0's ACL file never checks
a SUBSCRIBE (its source says "FIXME - implement ACL subscription strings"), only the delivery.
A node that subscribes to the ingest share group is then handed its share of the uplink, which
the delivery check drops: measured here, an intruder in the group made 5 of 10 messages vanish.
The plugin checks subscriptions (SUBACK 135), and takes changes while the broker runs.

``initial_config`` writes the plugin's file before the broker's first start (an admin client
and the ingest client); afterwards ``BrokerAdmin`` changes it live through the plugin's
``$CONTROL/dynamic-security/v1`` topic, as the admin client. A site's role is made once, with the
channels of its day: ``add_node`` and ``sync_roles`` (``patrolnet broker sync-roles``) add what a later
release's ``CHANNELS`` brought (``addRoleACL``), and change nothing else. Passwords are 32 random bytes,
URL-safe, so they go into ``mqtt://user:password@host`` URLs as they are.

A node's username is bound to its uplink's client id: MQTT lets a CONNECT with a session's client id
take that session over, so a node that borrowed an ingest worker's id would take the worker's session
and shared subscription, and the two would throw each other off in turn. Measured here: unbound, a
node's CONNECT as ``patrolnet-ingest-1`` resumed the worker's session (session present).

Example:
    >>> [acl["topic"] for acl in node_role("willow-court")["acls"]][:2]
    ['patrolnet/v1/willow-court/events', 'patrolnet/v1/willow-court/alerts']
    >>> node_role("+")
    Traceback (most recent call last):
    ...
    ValueError: site '+' must be letters, digits, '.', '_' or '-'
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import pwd
import re
import secrets
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from alerts.core.mqtt import connect, make_client
from alerts.core.protocol import CHANNELS, NAME_PATTERN, UPLINK_FILTER, commands_filter, uplink_topic
from alerts.intake.writer import SHARE_GROUP

log = logging.getLogger(__name__)

CONTROL_TOPIC = "$CONTROL/dynamic-security/v1"
ADMIN_ROLE = "patrolnet-admin"
INGEST_ROLE = "patrolnet-ingest"
SITE_ROLE_PREFIX = "patrolnet-site-"
_NAME = re.compile(NAME_PATTERN)
# Mosquitto's own count for PBKDF2-SHA512; enough for 256-bit random passwords, which no guessing reaches.
_ITERATIONS = 101
_DENY_BY_DEFAULT = {"publishClientSend": False, "publishClientReceive": False, "subscribe": False, "unsubscribe": True}


class BrokerAdminError(RuntimeError):
    """The broker refused a command, or did not answer; the message says which and why."""


def checked_name(kind: str, name: str) -> str:
    """``name`` when it is safe in a topic and a username (no ``+``, ``#``, ``/``); ValueError otherwise."""
    if not _NAME.fullmatch(name):
        raise ValueError(f"{kind} {name!r} must be letters, digits, '.', '_' or '-'")
    return name


def node_client_id(node_id: str) -> str:
    """The MQTT client id of an edge node's uplink (edge/node.py), which its broker username is bound to."""
    return f"patrolnet-edge-{checked_name('node', node_id)}-uplink"


def new_password() -> str:
    return secrets.token_urlsafe(32)


def _acl(acltype: str, topic: str) -> dict[str, Any]:
    return {"acltype": acltype, "topic": topic, "priority": 0, "allow": True}


def site_role_name(site: str) -> str:
    return SITE_ROLE_PREFIX + checked_name("site", site)


def node_role(site: str) -> dict[str, Any]:
    """The role of every node of ``site``: publish its uplink channels, read its commands."""
    checked_name("site", site)
    commands = commands_filter(site)
    acls = [_acl("publishClientSend", uplink_topic(site, channel)) for channel in CHANNELS]
    acls += [_acl("subscribePattern", commands), _acl("publishClientReceive", commands)]
    return {"rolename": site_role_name(site), "textname": f"edge nodes of site {site}", "acls": acls}


def ingest_role() -> dict[str, Any]:
    """Join the ingest share group, read the uplink, and publish to nodes' commands (confirmations); nothing else."""
    acls = [
        _acl("subscribeLiteral", f"$share/{SHARE_GROUP}/{UPLINK_FILTER}"),
        _acl("publishClientReceive", UPLINK_FILTER),
        _acl("publishClientSend", commands_filter("+")),
    ]
    return {"rolename": INGEST_ROLE, "textname": "central ingest workers", "acls": acls}


def admin_role() -> dict[str, Any]:
    """The plugin's control topic, and ``$SYS`` for monitoring."""
    acls = [
        _acl(acltype, topic)
        for topic in ("$CONTROL/dynamic-security/#", "$SYS/#")
        for acltype in ("publishClientReceive", "subscribePattern")
    ]
    acls.append(_acl("publishClientSend", "$CONTROL/dynamic-security/#"))
    return {"rolename": ADMIN_ROLE, "textname": "patrolnet broker administration", "acls": acls}


def _client(username: str, password: str, role: str) -> dict[str, Any]:
    salt = os.urandom(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, _ITERATIONS)
    return {
        "username": checked_name("username", username),
        "password": base64.b64encode(digest).decode(),
        "salt": base64.b64encode(salt).decode(),
        "iterations": _ITERATIONS,
        "roles": [{"rolename": role}],
    }


def initial_config(admin: tuple[str, str], ingest: tuple[str, str]) -> dict[str, Any]:
    """The plugin's file for a new broker: the (username, password) of the admin and of the ingest workers,
    and deny by default."""
    return {
        "defaultACLAccess": _DENY_BY_DEFAULT,
        "clients": [_client(*admin, ADMIN_ROLE), _client(*ingest, INGEST_ROLE)],
        "groups": [],
        "roles": [admin_role(), ingest_role()],
    }


def write_initial_config(path: Path, admin: tuple[str, str], ingest: tuple[str, str]) -> bool:
    """Writes the plugin's file unless there is one (False then: the broker owns it now); readable by the
    ``mosquitto`` user only, who rewrites it on every change."""
    if path.exists():
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as file:
        json.dump(initial_config(admin, ingest), file, indent=2)
    if os.geteuid() == 0:
        try:
            entry = pwd.getpwnam("mosquitto")
        except KeyError:
            log.warning("no mosquitto user: %s stays root's", path)
        else:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    return True


class BrokerAdmin:
    """The plugin's control API, as the admin client; a context manager.

    Each ``run`` sends one list of commands and waits for their answers; an answer with an
    error raises ``BrokerAdminError``, except the errors named in ``tolerate``.
    """

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._client, self._address, self._props = make_client(url, f"patrolnet-broker-admin-{uuid.uuid4().hex[:8]}")
        self._ready = threading.Event()
        self._answer = threading.Event()
        self._responses: list[dict[str, Any]] = []
        self._refused: str | None = None
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = self._on_subscribe
        self._client.on_message = self._on_message

    def __enter__(self) -> BrokerAdmin:
        connect(self._client, self._address, self._props)
        if not self._ready.wait(self.timeout) or self._refused:
            self.close()
            raise BrokerAdminError(f"cannot reach the broker's control API: {self._refused or 'no answer'}")
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: ReasonCode, props: object
    ) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            self._ready.set()
            return
        client.subscribe(f"{CONTROL_TOPIC}/response", qos=1)

    def _on_subscribe(
        self, client: mqtt.Client, userdata: object, mid: int, codes: list[ReasonCode], props: object
    ) -> None:
        if any(code.is_failure for code in codes):
            self._refused = f"not allowed to read the plugin's answers ({codes[0]}): not the admin client?"
        self._ready.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        try:
            self._responses = json.loads(message.payload)["responses"]
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("unreadable answer from the broker: %s", exc)
            return
        self._answer.set()

    def run(self, commands: list[dict[str, Any]], tolerate: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        self._answer.clear()
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": commands}), qos=1)
        if not self._answer.wait(self.timeout):
            raise BrokerAdminError(f"the broker did not answer {[c['command'] for c in commands]}")
        for response in self._responses:
            error = response.get("error")
            if error and error not in tolerate:
                raise BrokerAdminError(f"{response.get('command')}: {error}")
        return self._responses

    def add_node(self, site: str, node: str, password: str, client_id: str | None = None) -> None:
        """A node of ``site``: its client, with the site's role (made the first time, brought up to the current
        channels otherwise), bound to the node's uplink client id (``node_client_id``) so that it cannot take
        over another client's session."""
        self.run([{"command": "createRole", **node_role(site)}], tolerate=("Role already exists",))
        self.sync_role(site)
        bound = client_id or node_client_id(node)
        self.add_client(node, password, site_role_name(site), f"edge node of site {site}", bound)

    def sync_role(self, site: str) -> list[str]:
        """Adds to ``site``'s role the ACLs of ``node_role`` it lacks (a role made before a channel existed); the
        topics added. The role's other ACLs stay as they are."""
        name = site_role_name(site)
        role = self.run([{"command": "getRole", "rolename": name}])[0].get("data", {}).get("role", {})
        held = {(acl.get("acltype"), acl.get("topic")) for acl in role.get("acls", [])}
        missing = [acl for acl in node_role(site)["acls"] if (acl["acltype"], acl["topic"]) not in held]
        if missing:
            self.run([{"command": "addRoleACL", "rolename": name, **acl} for acl in missing])
            log.info("role %s: added %s", name, ", ".join(f"{a['acltype']} {a['topic']}" for a in missing))
        return [acl["topic"] for acl in missing]

    def sync_roles(self) -> dict[str, list[str]]:
        """``sync_role`` for every site role on the broker; site -> the topics added."""
        answer = self.run([{"command": "listRoles", "verbose": False, "count": -1, "offset": 0}])
        names = answer[0].get("data", {}).get("roles", [])
        sites = [name.removeprefix(SITE_ROLE_PREFIX) for name in names if name.startswith(SITE_ROLE_PREFIX)]
        return {site: self.sync_role(site) for site in sites}

    def add_client(self, username: str, password: str, role: str, textname: str, client_id: str | None = None) -> None:
        client = {"username": checked_name("username", username), "password": password, "textname": textname}
        if client_id is not None:
            client["clientid"] = checked_name("client id", client_id)
        self.run([{"command": "createClient", **client, "roles": [{"rolename": role}]}])

    def add_ingest(self, username: str, password: str) -> None:
        self.run([{"command": "createRole", **ingest_role()}], tolerate=("Role already exists",))
        self.add_client(username, password, INGEST_ROLE, "central ingest worker")

    def rotate(self, username: str, password: str) -> None:
        """A new password; the client's connections are closed (disable, enable), so the old one is done."""
        name = checked_name("username", username)
        change = {"command": "setClientPassword", "username": name, "password": password}
        if name == self._address.username:
            self._rotate_self(change)
            return
        self.run([change, *({"command": toggle, "username": name} for toggle in ("disableClient", "enableClient"))])

    def _rotate_self(self, change: dict[str, Any]) -> None:
        """The plugin closes the admin's own connection when its password changes, before it answers: the proof
        is a new connection with the new password."""
        self._client.publish(CONTROL_TOPIC, json.dumps({"commands": [change]}), qos=1)
        a = self._address
        url = f"{'mqtts' if a.tls else 'mqtt'}://{a.username}:{change['password']}@{a.host}:{a.port}"
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                with BrokerAdmin(url, timeout=2.0):
                    return
            except BrokerAdminError:
                if time.monotonic() > deadline:
                    raise

    def remove(self, username: str) -> None:
        """Deletes the client; the broker closes its connections. Not the admin itself: nobody could add one."""
        name = checked_name("username", username)
        if name == self._address.username:
            raise ValueError(f"{name!r} is the admin this command runs as: it would lock everybody out")
        self.run([{"command": "deleteClient", "username": name}])

    def clients(self) -> list[str]:
        answer = self.run([{"command": "listClients", "verbose": False, "count": -1, "offset": 0}])
        return list(answer[0].get("data", {}).get("clients", []))
