"""Local stand-ins for the real parts, for the demo, the tests and the benchmarks: PostgreSQL, Mosquitto, a
GStreamer RTSP camera, simulated fire sensors. Nothing in the product imports this package; it imports the product."""
