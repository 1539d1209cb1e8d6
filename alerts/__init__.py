"""Alerts: the shared contract (``alerts.core``) and the centre that stores and serves what the nodes send.

``alerts.core`` is the ground floor both sides import: the event, reading and alert types, the uplink protocol,
MQTT plumbing, settings, the debouncer and the alert policy. Everything else here runs at the centre and is never
imported by the edge side (``ingest``, ``detectors``, ``edge``):

- ``alerts.store``: the schema, migrations, batch writes and the queries of each aggregate;
- ``alerts.intake``: the ingest worker that reads the uplink, the node watchdog, broker credentials;
- ``alerts.notify``: pushing alert changes out (webhooks);
- ``alerts.api``: the FastAPI app, its routes, the live stream, CAP and the page;
- ``alerts.auth``, ``alerts.coverage``, ``alerts.identity``: who may see what, which desks a blind device
  concerns, which site a message may speak for.
"""
