"""The centre's intake: ingest workers reading the uplink into the store, the node watchdog, broker credentials."""
