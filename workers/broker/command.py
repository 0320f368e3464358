"""The `riverrun broker` command: run a local broker in the foreground, or check a broker."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from riverrun.producers.signals import StopSignals
from riverrun.schemas import (
    KafkaSettings,
    RiverrunSettings,
    add_settings_flags,
    collect_section_flags,
)
from riverrun.workers.broker.process import BrokerError, claim_port

logger = logging.getLogger(__name__)

ENGINES = ("tansu", "kafka")


class BrokerCheckSettings(RiverrunSettings):
    """Settings of `riverrun broker check`: how to reach the broker to probe."""

    model_config = SettingsConfigDict(extra="forbid")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings, description="The broker.")


def parse_config_pairs(pairs: list[str] | None) -> dict[str, str]:
    """`key=value` strings to a dict; a malformed pair raises SystemExit naming it."""
    config: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"--config {pair!r} is not key=value (e.g. num.partitions=8)")
        config[key.strip()] = value
    return config


def register(parser: argparse.ArgumentParser) -> None:
    """Add the flags of `riverrun broker`, and `riverrun broker check`."""
    parser.description = (
        "Run a local broker in the foreground until SIGTERM or Ctrl-C. Prints one line, "
        "'bootstrap: host:port[,...]', once every node accepts connections."
    )
    parser.add_argument("--engine", choices=ENGINES, default="tansu",
                        help="tansu: embedded, in memory, starts at once [default]; kafka: "
                        "Apache Kafka KRaft from Maven Central, needs java and mvn.")
    parser.add_argument("--nodes", type=int, default=1,
                        help="Apache Kafka nodes (broker+controller each) [default 1].")
    parser.add_argument("--port", type=int, default=9092,
                        help="Broker port of the first node; node i uses port+i; 0 picks free "
                        "ports [default 9092, Kafka's own].")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="Apache Kafka data dir, kept across runs [default: temp, removed].")
    parser.add_argument("--config", action="append", default=None, metavar="KEY=VALUE",
                        help="Apache Kafka server property, applied last; repeatable.")
    parser.set_defaults(handler=run_broker)
    actions = parser.add_subparsers(dest="broker_action", metavar="ACTION")
    check = actions.add_parser(
        "check", help="Probe what a broker really guarantees; prints JSON.",
        description="Runs bounded probes on uuid-named topics and groups: idempotent produce, "
        "transactions, read_committed, log compaction, cooperative-sticky, group.protocol="
        "consumer. Prints the measured capabilities as JSON.",
    )
    check.add_argument("--compaction-timeout", type=float, default=6.0,
                       help="Seconds to wait for the cleaner to compact [default 6].")
    add_settings_flags(check, BrokerCheckSettings)
    check.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    """Run `riverrun broker check`: probe the broker, print JSON."""
    from confluent_kafka import KafkaException

    from riverrun.workers.broker.check import check_broker

    overrides: dict[str, Any] = collect_section_flags(args)
    settings = BrokerCheckSettings(**overrides)
    logger.info("checking broker %s", settings.kafka.redacted())
    try:
        capabilities = check_broker(settings.kafka, compaction_timeout_s=args.compaction_timeout)
    except KafkaException as exc:
        print(f"riverrun broker check: cannot reach {settings.kafka.bootstrap_servers}: "
              f"{exc.args[0]}; check --bootstrap-servers and that the broker runs",
              file=sys.stderr)
        return 1
    print(capabilities.model_dump_json(indent=2), flush=True)
    return 0


def run_broker(args: argparse.Namespace) -> int:
    """Run `riverrun broker`: start, print the bootstrap line, wait for a signal, stop."""
    stopping = threading.Event()

    def on_signal(name: str) -> None:
        logger.info("received %s; stopping the broker", name)
        stopping.set()

    # Installed before the start, so a signal during a slow first start still stops cleanly.
    with StopSignals(on_signal):
        try:
            handle = _start(args)
        except BrokerError as exc:
            print(f"riverrun broker: {exc}", file=sys.stderr, flush=True)
            return 1
        try:
            print(f"bootstrap: {handle.bootstrap_servers}", flush=True)
            while not stopping.wait(0.5):
                if not handle.alive():
                    print("riverrun broker: the broker exited on its own; see its log",
                          file=sys.stderr, flush=True)
                    return 1
        finally:
            handle.stop()
    return 0


def _start(args: argparse.Namespace) -> Any:
    if args.port:  # every node's port, before a JVM or a Rust binary finds out on its own
        for node in range(args.nodes):
            claim_port(args.port + node)
    if args.nodes < 1:
        raise SystemExit(f"--nodes {args.nodes}: a cluster needs at least one node")
    if args.engine == "tansu":
        if args.nodes != 1 or args.data_dir is not None or args.config:
            raise SystemExit(
                "--engine tansu runs one in-memory node: --nodes, --data-dir and --config need "
                "--engine kafka"
            )
        from riverrun.workers.broker.tansu import start_tansu

        return start_tansu(port=args.port or None)
    from riverrun.workers.broker.kafka import start_kafka

    return start_kafka(nodes=args.nodes, port=args.port or None, data_dir=args.data_dir,
                       config=parse_config_pairs(args.config))
