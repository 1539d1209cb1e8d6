"""The alert API: the app (``app``), the request guard, routes, the live stream, CAP and the page."""
