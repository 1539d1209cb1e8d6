"""The edge node's sensor path without MQTT: CPU a message, by thread, and the garbage collector's pauses.

    .venv/bin/python bench/bench_node.py [--messages 20000] [--rounds 3] [--from DIR,...]

``bench/bench_sensors.py`` measures the whole path, broker to database, and on 2 shared cores its node figure
moves by a third between runs. This one measures what the node itself adds, with nothing else running: zigbee2mqtt
states of 50 sensors (5 readings each) handed to ``SensorPipeline.handle`` as paho's callback hands them, with the
sink and the spool as the node has them (flushes, disk syncs, deliveries saved, acknowledgements run), no more than
the broker's window (1,000) unacknowledged at a time, after the collector is settled as the node settles it. It
prints, per round, the CPU a message of the thread that handles the messages and of the sink's, and the
collections of each generation with their p50 and longest pause (``gc.callbacks``).

``--from`` runs each round in a process of its own for each checkout in turn (e.g. the commit before a change:
``git worktree add``), so before and after are measured alike.
Prints figures; exits 1 only when a message was not acknowledged.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

from sensor_load import READINGS_PER_MESSAGE, SENSORS, WINDOW, node_yaml, state, topic

REPO = Path(__file__).resolve().parent.parent


class Pauses:
    """Every collection's wall time, by generation, from ``gc.callbacks``."""

    def __init__(self) -> None:
        self.by_generation: dict[int, list[float]] = defaultdict(list)
        self._started = 0.0

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.by_generation[info["generation"]].append(time.perf_counter() - self._started)


def thread_cpu(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(messages: int) -> dict:
    """Runs the path of the checkout on ``sys.path`` once; its figures."""
    from alerts.core import collector
    from alerts.core.models import utc_now
    from alerts.core.policy import AlertPolicy
    from detectors.verification import AlarmVerification
    from edge.config import parse_config
    from edge.letters import DeadLetters
    from edge.outbox import Spool
    from edge.sensors import SensorPipeline
    from edge.sink import Ack, EventSink
    from edge.state import EdgeState

    config = parse_config(node_yaml("n1", "mqtt://127.0.0.1:1", Path(tempfile.mkdtemp()) / "outbox.sqlite3"))
    spool = Spool(config.uplink.spool)
    edge_state = EdgeState(spool)

    def send(channel: str, payload: bytes) -> None:
        spool.put(f"uplink/{channel}", payload)  # as the uplink spools it; nothing sends it on

    sink = EventSink(AlarmVerification(), AlertPolicy(), edge_state, send, max_unacked=WINDOW // 2)
    pipeline = SensorPipeline(config, sink, DeadLetters(sink, "n1"), edge_state, since=utc_now())
    states = [(topic(i), state(i)) for i in range(messages)]
    acked = threading.Semaphore(WINDOW)
    done = [0]

    def ack() -> None:
        done[0] += 1
        acked.release()

    sink.start()
    # The node settles its collector once started (freeze_startup before 2026-12-04, late).
    settle = getattr(collector, "settle_collector", None) or getattr(collector, "freeze_startup")  # noqa: B009
    settle()
    pauses = Pauses()
    gc.callbacks.append(pauses)
    sink_id = sink._thread.native_id
    assert sink_id is not None
    handling, sinking, wall = time.thread_time(), thread_cpu(sink_id), time.perf_counter()
    for i, (sensor_topic, payload) in enumerate(states):
        acked.acquire()  # the broker's window: no more than WINDOW unacknowledged
        delivery = pipeline.deliveries.note(i % 65_535 + 1, sensor_topic, payload)
        pipeline.handle(sensor_topic, payload, Ack(ack, [delivery]))
    handling = time.thread_time() - handling
    deadline = time.monotonic() + 60
    while done[0] < messages and time.monotonic() < deadline:
        time.sleep(0.01)
    sinking, wall = thread_cpu(sink_id) - sinking, time.perf_counter() - wall
    gc.callbacks.remove(pauses)
    sink.stop()
    return {
        "handling_us": handling / messages * 1e6,
        "sink_us": sinking / messages * 1e6,
        "wall_s": wall,
        "acknowledged": done[0],
        "pauses": {g: p for g, p in sorted(pauses.by_generation.items())},
    }


def describe(result: dict, messages: int) -> str:
    collections = "  ".join(
        f"gen{g} {len(p):>4} x p50 {statistics.median(p) * 1000:5.2f} max {max(p) * 1000:6.2f} ms"
        for g, p in result["pauses"].items()
    )
    lost = "" if result["acknowledged"] == messages else f"  ONLY {result['acknowledged']} ACKNOWLEDGED"
    return (
        f"handling {result['handling_us']:6.1f} us/msg  sink {result['sink_us']:5.1f} us/msg  "
        f"wall {result['wall_s']:4.1f} s  {collections}{lost}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="sensor messages a round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each checkout, alternating")
    parser.add_argument("--from", dest="sources", default=str(REPO), help="checkouts to run, comma-separated")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a round, as JSON, for --from
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_round(args.messages)))
        return 0
    sources = [Path(s).resolve() for s in args.sources.split(",")]
    per = f"{READINGS_PER_MESSAGE} readings from {SENSORS} sensors"
    print(f"the node's sensor path without MQTT, {args.messages:,} messages of {per}:")
    complete = True
    for n in range(args.rounds):
        for source in sources:
            env = {**os.environ, "PYTHONPATH": str(source)}
            command = [sys.executable, __file__, "--one", "--messages", str(args.messages)]
            out = subprocess.run(command, env=env, cwd=source, capture_output=True, text=True, check=True).stdout
            result = json.loads(out.splitlines()[-1])
            result["pauses"] = {int(g): p for g, p in result["pauses"].items()}
            complete &= result["acknowledged"] == args.messages
            print(f"  round {n + 1}  {source.name:<12} {describe(result, args.messages)}")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
