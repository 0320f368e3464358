"""`riverrun models ...`: release a model from a spec, list models, show a version, its history.

A composition root: the warm start reads a dataset through `producers.dataset`, the one place
the registry touches the client package.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from riverrun.producers.files import add_file_flags, file_options
from riverrun.schemas import (
    DriftDetected,
    KafkaSettings,
    ModelRetired,
    ModelVersionReleased,
    RiverrunSettings,
    Signature,
    SnapshotPublished,
    TopicSettings,
    add_settings_flags,
    collect_section_flags,
)
from riverrun.schemas.settings import explain
from riverrun.workers.registry.client import Registry, RegistrySettings
from riverrun.workers.registry.records import RegistryRecord
from riverrun.workers.registry.signature import SignatureInference
from riverrun.workers.registry.spec import ModelSpec, WarmStart, build_estimator, load_spec
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.runtime.errors import ConfigurationError, RiverrunError

logger = logging.getLogger(__name__)

_LABEL_TYPES: dict[str, type] = {"bool": bool, "int": int, "str": str, "float": float}


class ModelsSettings(RiverrunSettings):
    """Settings of `riverrun models`."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    registry: RegistrySettings = Field(default_factory=RegistrySettings)


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `release`, `list`, `show` and `history` under `riverrun models`."""
    release = actions.add_parser("release", help="Release the next version of a model from a spec.")
    release.add_argument("name", help="Model name, e.g. fraud.")
    release.add_argument("--spec", type=Path, required=True, help="Spec file (YAML or JSON).")
    release.add_argument("--warm-start", metavar="DATASET", default=None,
                         help="Learn this dataset (a catalog name or a file) first; overrides "
                         "the spec's warm_start.")
    release.add_argument("--limit", type=int, default=None,
                         help="Records of the warm-start dataset to learn [spec's, else 1000].")
    release.add_argument("--seed", type=int, default=None, help="Seed of a synthetic dataset.")
    release.add_argument("--deploy", action="store_true",
                         help="Make the new version answer at once: publish a single policy "
                         "naming it with the release. Without it a new version takes no "
                         "traffic until `riverrun models deploy` names it (a model's first "
                         "version excepted).")
    add_file_flags(release)
    release.set_defaults(handler=_run_release)

    listing = actions.add_parser("list", help="Every model, its latest version and snapshot.")
    listing.set_defaults(handler=_run_list)

    show = actions.add_parser("show", help="One version (the latest unless NAME@VERSION).")
    show.add_argument("name", metavar="NAME[@VERSION]", help="e.g. fraud or fraud@2.")
    show.add_argument("--snapshots", type=int, default=10, metavar="N",
                      help="Show the newest N snapshots; 0 for all [10].")
    show.set_defaults(handler=_run_show)

    retire = actions.add_parser(
        "retire", help="Withdraw a model, or one version, and delete it from the registry."
    )
    retire.add_argument("name", metavar="NAME[@VERSION]", help="e.g. fraud or fraud@2.")
    retire.add_argument("--reason", default="", help="Why, for the record.")
    retire.set_defaults(handler=_run_retire)

    history = actions.add_parser("history", help="Every registry record of a model, in order.")
    history.add_argument("name", help="Model name.")
    history.set_defaults(handler=_run_history)

    for sub in (release, listing, show, history, retire):
        sub.add_argument("--json", action="store_true", help="Print JSON instead of text.")
        add_settings_flags(sub, ModelsSettings)


def _settings(args: argparse.Namespace) -> ModelsSettings:
    return ModelsSettings(**collect_section_flags(args))


def guarded(run: Any, refused: tuple[type[Exception], ...] = ()) -> Any:
    """Wrap a `riverrun models` handler: bad settings and `refused` errors exit 2, naming why."""

    def handler(args: argparse.Namespace) -> int:
        try:
            code: int = run(args)
            return code
        except ValidationError as exc:
            logger.error("bad configuration: %s", explain(exc))
            return 2
        except refused as exc:
            logger.error("%s", exc)
            return 2
        except RiverrunError as exc:
            logger.error("%s", exc)
            return 2 if isinstance(exc, ConfigurationError) else 1

    handler.__doc__ = run.__doc__
    return handler


def warm_start(
    estimator: Any, spec: ModelSpec, plan: WarmStart, inference: SignatureInference | None = None
) -> int:
    """Learn the plan's dataset prefix; return how many records were learned.

    Each row is also shown to `inference`, which infers the version's signature from them.
    """
    from riverrun.producers.dataset import load
    from riverrun.producers.files import FileOptions

    cast = _LABEL_TYPES[spec.label_type]
    seen = 0
    file = FileOptions(target=plan.target, key=plan.key,
                       types=plan.types)  # type: ignore[arg-type]  # checked by pydantic
    for x, y in load(plan.dataset, seed=plan.seed, limit=plan.limit, file=file):
        if inference is not None:
            inference.observe(x)
        estimator.learn_one(x, cast(y))
        seen += 1
    return seen


def _plan(args: argparse.Namespace, spec: ModelSpec) -> WarmStart | None:
    base = spec.warm_start
    if args.warm_start is None and base is None:
        return None
    file = file_options(args)
    return WarmStart(
        dataset=args.warm_start or (base.dataset if base else ""),
        limit=args.limit if args.limit is not None else (base.limit if base else 1000),
        seed=args.seed if args.seed is not None else (base.seed if base else 1),
        target=file.target or (base.target if base else None),
        key=file.key or (base.key if base else None),
        types={**(base.types if base else {}), **file.types},
    )


def _release(args: argparse.Namespace) -> int:
    settings = _settings(args)
    spec = load_spec(args.spec)
    estimator = build_estimator(spec, settings.registry.feature_modules)
    settings.registry.signer()  # refuse a missing key before learning anything
    plan = _plan(args, spec)
    seen = 0
    inference = SignatureInference()
    if plan is not None:
        try:
            seen = warm_start(estimator, spec, plan, inference)
        except ValueError as exc:
            logger.error("warm start: %s", exc)
            return 2
    signature = Signature(features=spec.features if spec.features is not None
                          else inference.features(), label_type=spec.label_type)  # fmt: skip
    with Registry(settings.kafka, settings.topics, settings.registry) as registry:
        released, snapshot = registry.release(args.name, spec, estimator, examples_seen=seen,
                                              signature=signature, deploy=args.deploy)  # fmt: skip
        view = registry.refresh()
    policy = view.policy(released.model)
    if args.json:
        print(json.dumps({"version": released.model_dump(mode="json"),
                          "snapshot": snapshot.model_dump(mode="json"),
                          "policy": policy.model_dump(mode="json") if policy else None},
                         indent=2))  # fmt: skip
    else:
        print(f"released {released.model}@{released.version} ({spec.pipeline}; "
              f"warm start: {seen} records; artifact {snapshot.artifact.size} bytes at "
              f"{snapshot.artifact.location})")
        print(_traffic(released, view))
    return 0


def _traffic(released: ModelVersionReleased, view: RegistryView) -> str:
    """Who answers after a release, in a line: the new version, or what keeps answering.

    A policy names only versions released before it, so a policy naming the new one is the
    release's own (`--deploy`); with no policy the first live version answers.
    """
    name, version = released.model, released.version
    policy = view.policy(name)
    if policy is not None and any(a.version == version for a in policy.assignments):
        if policy.strategy != "single":
            return f"{name}@{version} is in policy #{policy.sequence} ({policy.strategy})"
        return f"{name}@{version} answers every request (policy #{policy.sequence}, single)"
    default = view.default_version(name)
    if policy is None and default == version:
        return f"{name}@{version} answers every request (the model's first live version)"
    current = (f"policy #{policy.sequence} ({policy.strategy}) keeps routing" if policy
               else f"{name}@{default} keeps answering")
    return (f"{name}@{version} takes no traffic yet: {current}; `riverrun models deploy {name} "
            f"--strategy single --version {version}` (or a canary, shadow, ... with "
            f"--challenger {version}) moves traffic to it")


def _view(args: argparse.Namespace) -> RegistryView:
    settings = _settings(args)
    registry = Registry(settings.kafka, settings.topics, settings.registry)
    return registry.refresh(history=args.action == "history")


def _list(args: argparse.Namespace) -> int:
    view = _view(args)
    rows = []
    for model in view.models():
        latest = view.latest_snapshot(model)
        policy = view.policy(model)
        rows.append({
            "model": model,
            "latest_version": view.latest_version(model),
            "versions": len(view.versions(model)),
            "latest_snapshot": latest.snapshot if latest else None,
            "policy": policy.strategy if policy else None,
        })  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models released yet")
    for row in rows:
        version = row["latest_version"]
        print(f"{row['model']}: latest version {version if version else '-'} "
              f"({row['versions']} released), snapshot #{row['latest_snapshot']}, "
              f"policy {row['policy'] or '-'}")
    return 0


def _show(args: argparse.Namespace) -> int:
    name, _, wanted = args.name.partition("@")
    view = _view(args)
    version = int(wanted) if wanted.isdigit() else view.latest_version(name)
    released = view.version(name, version) if version is not None else None
    if released is None:
        logger.error("no release %s in the registry: `riverrun models list` shows what is there",
                     args.name)
        return 1
    snapshots = view.snapshots(name, released.version)
    hidden = max(0, len(snapshots) - args.snapshots) if args.snapshots > 0 else 0
    snapshots = snapshots[hidden:]
    if args.json:
        print(json.dumps({"version": released.model_dump(mode="json"),
                          "snapshots": [s.model_dump(mode="json") for s in snapshots]}, indent=2))
        return 0
    print(f"{name}@{released.version}  task {released.task}  "
          f"released {released.released_at:%Y-%m-%d %H:%M:%S}")
    print(f"  pipeline: {released.spec.get('pipeline')}")
    if released.description:
        print(f"  description: {released.description}")
    signature = released.signature
    if signature is not None:
        print(f"  label: {signature.label_type}")
        if signature.features:
            print(f"  features ({len(signature.features)}):")
            for line in signature.describe().splitlines():
                print(f"    {line}")
        else:
            print("  features: not declared (requests are not checked)")
    if hidden:
        print(f"  ({hidden} older snapshots not shown: --snapshots 0 shows all)")
    for snap in snapshots:
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in sorted(snap.metrics.items())) or "-"
        print(f"  #{snap.snapshot}: {snap.examples_seen} examples, {snap.artifact.size} bytes, "
              f"metrics {metrics}, at {snap.artifact.location}")
    return 0


def _describe(record: RegistryRecord) -> str:
    if isinstance(record, DriftDetected):
        return (f"drift    {record.model}@{record.version} {record.stream} loss: {record.detector} "
                f"fired after {record.position} (mean loss {record.mean_loss:.4g})")
    if isinstance(record, ModelVersionReleased):
        return f"version  {record.model}@{record.version} released ({record.task})"
    if isinstance(record, SnapshotPublished):
        restored = (f", restores #{record.restored_from}: {record.reason}"
                    if record.restored_from is not None else "")
        return (f"snapshot {record.model}@{record.version}#{record.snapshot} "
                f"({record.examples_seen} examples, {record.artifact.size} bytes{restored})")
    if isinstance(record, ModelRetired):
        what = f"{record.model}@{record.version}" if record.version else record.model
        return f"retired  {what}" + (f": {record.reason}" if record.reason else "")
    parts = ", ".join(f"v{a.version} {a.role} {a.weight:g}" for a in record.assignments)
    return f"policy   {record.model} #{record.sequence} {record.strategy}: {parts}"


def _retire(args: argparse.Namespace) -> int:
    name, _, wanted = args.name.partition("@")
    if wanted and not wanted.isdigit():
        raise ConfigurationError(f"{args.name!r} is not NAME or NAME@VERSION")
    settings = _settings(args)
    with Registry(settings.kafka, settings.topics, settings.registry) as registry:
        record = registry.retire(name, int(wanted) if wanted else None, args.reason)
    what = f"{name}@{record.version}" if record.version is not None else name
    print(f"retired {what}: no longer served, listed or learned; a new release of {name} "
          f"will be version {record.last_version + 1} or later")
    return 0


def _history(args: argparse.Namespace) -> int:
    records = _view(args).history(args.name)
    if args.json:
        print(json.dumps([r.model_dump(mode="json") for r in records], indent=2))
        return 0
    if not records:
        logger.error("no records of %s in the registry", args.name)
        return 1
    for record in records:
        print(_describe(record))
    return 0


_run_release = guarded(_release)
_run_list = guarded(_list)
_run_show = guarded(_show)
_run_history = guarded(_history)
_run_retire = guarded(_retire)
