"""`riverrun models keys NAME[@VERSION] [--key K]`: a per-key model's keys, or one key's state."""

from __future__ import annotations

import argparse
import json
import logging
import math
from datetime import UTC, datetime

from riverrun.schemas import add_settings_flags, collect_section_flags
from riverrun.workers.keys.changelog import StoredKeyState, read_states
from riverrun.workers.keys.model import weight
from riverrun.workers.registry import Registry
from riverrun.workers.registry.command import ModelsSettings, guarded
from riverrun.workers.registry.spec import per_key_of
from riverrun.workers.runtime.errors import ConfigurationError

logger = logging.getLogger(__name__)


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `keys` under `riverrun models`."""
    parser = actions.add_parser(
        "keys", help="A per-key model's keys (the most labelled first), or one key's state."
    )
    parser.add_argument("name", metavar="NAME[@VERSION]",
                        help="e.g. fraud (its latest per-key version) or fraud@2.")
    parser.add_argument("--key", default=None, help="Show this key's state.")
    parser.add_argument("--top", type=int, default=20, metavar="N",
                        help="List the N keys with the most labels; 0 for all [20].")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of text.")
    add_settings_flags(parser, ModelsSettings)
    parser.set_defaults(handler=guarded(_keys))


def _describe(state: StoredKeyState, tau_weight: float) -> dict[str, object]:
    counts = state.counts
    scored = counts.scored
    return {
        "key": state.key,
        "examples": counts.examples,
        "weight": round(tau_weight, 4),
        "last_label_at": datetime.fromtimestamp(counts.updated_ms / 1000, UTC).isoformat()
        if counts.updated_ms else None,
        "log_loss": counts.blend_loss / scored if scored else None,
        "global_log_loss": counts.global_loss / scored if scored else None,
        "bytes": len(state.value),
        "next_offset": counts.next_offset,
    }


def _keys(args: argparse.Namespace) -> int:
    settings = ModelsSettings(**collect_section_flags(args))
    name, _, wanted = args.name.partition("@")
    if wanted and not wanted.isdigit():
        raise ConfigurationError(f"{args.name!r} is not NAME or NAME@VERSION")
    with Registry(settings.kafka, settings.topics, settings.registry) as registry:
        view = registry.refresh()
        versions = [r.version for r in view.versions(name) if per_key_of(r.spec)]
        if wanted:
            version = int(wanted)
            if version not in versions:
                raise ConfigurationError(f"{name}@{version} is not a per-key version "
                                         "(its spec has no per_key)")  # fmt: skip
        elif versions:
            version = versions[-1]
        else:
            raise ConfigurationError(f"{name} has no per-key version: release a spec with "
                                     "per_key to learn a model per key")  # fmt: skip
        released = view.version(name, version)
        per_key = per_key_of(released.spec)  # type: ignore[union-attr]  # listed above
        assert per_key is not None  # noqa: S101  # listed as per-key above
        states = read_states(settings.kafka, settings.topics.key_states, registry.verifier,
                             lambda m, v: m == name and v == version)  # fmt: skip
    keys = {key: _describe(s, weight(s.counts.examples, per_key))
            for (_, _, key), s in states.items()}  # fmt: skip
    if args.key is not None:
        found = keys.get(args.key)
        if found is None:
            logger.error("%s@%d has no state for key %r (never labelled, expired, or another "
                         "version's): the global model answers it", name, version, args.key)
            return 1
        print(json.dumps(found, indent=2) if args.json else
              "\n".join(f"{k:16} {v}" for k, v in found.items()))  # fmt: skip
        return 0
    ranked = sorted(keys.values(), key=lambda k: (-int(k["examples"]), str(k["key"])))  # type: ignore[call-overload]
    shown = ranked if args.top == 0 else ranked[:args.top]
    total = sum(int(k["examples"]) for k in keys.values())  # type: ignore[call-overload]
    if args.json:
        print(json.dumps({"model": name, "version": version, "keys": len(keys),
                          "examples": total, "shown": shown}, indent=2))  # fmt: skip
        return 0
    print(f"{name}@{version}: {len(keys)} keys, {total} labels learned "
          f"({per_key.answer}, tau {per_key.tau:g})")
    if shown:
        print(f"{'key':24} {'labels':>7} {'weight':>7} {'log loss':>9} {'global':>9}  last label")
    for k in shown:
        loss, global_loss = k["log_loss"], k["global_log_loss"]
        print(f"{str(k['key'])[:24]:24} {k['examples']:>7} {k['weight']:>7.3f} "
              f"{_number(loss):>9} {_number(global_loss):>9}  {k['last_label_at'] or '-'}")
    return 0


def _number(value: object) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else "-"
