"""`riverrun models deploy|promote|rollback|status`: drive a model's policy from the terminal.

Each change is a `PolicyChanged` on the `models` topic with the next sequence; scorers route by
it and the judge tests it. `status` reads the policy from the registry and the evidence from
the judge's HTTP state.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import urllib.error
import urllib.request
from typing import Any

from riverrun.schemas import (
    PolicyChanged,
    add_settings_flags,
    collect_section_flags,
)
from riverrun.workers.registry.client import Registry
from riverrun.workers.registry.command import ModelsSettings, guarded
from riverrun.workers.registry.view import RegistryView
from riverrun.workers.routing.plan import PolicyError, plan_for
from riverrun.workers.routing.policy import (
    STRATEGIES,
    deploy,
    learning_versions,
    promote,
    rollback,
)

logger = logging.getLogger(__name__)

DEFAULT_JUDGE_URL = "http://127.0.0.1:9102"


def register(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `deploy`, `promote`, `rollback` and `status` under `riverrun models`."""
    dep = actions.add_parser("deploy", help="Deploy versions of a model under a strategy.")
    dep.add_argument("name", help="Model name.")
    dep.add_argument("--strategy", required=True, choices=STRATEGIES, help="How traffic is split.")
    dep.add_argument("--version", default=None, metavar="V[#S]",
                     help="The champion (blue, first arm) [the current champion].")
    dep.add_argument("--challenger", action="append", default=[], metavar="V[#S]",
                     help="A challenger: shadow, canary, green or another arm (repeatable).")
    dep.add_argument("--weight", type=float, default=None,
                     help="Canary: its first share [0.05]. A/B, bandit: each challenger's share "
                          "[an equal split].")
    dep.add_argument("--step", action="append", default=[], metavar="W@SECONDS",
                     help="Canary: take share W from SECONDS after the deployment (repeatable).")
    dep.add_argument("--metric", choices=("accuracy", "log_loss", "loss"), default=None,
                     help="What the judge compares [accuracy].")
    dep.add_argument("--margin", type=float, default=None,
                     help="Non-inferiority margin, in the metric's units [0].")
    dep.add_argument("--alpha", type=float, default=None,
                     help="False-decision rate the judge holds to [0.05].")
    dep.add_argument("--min-samples", type=int, default=None,
                     help="Outcomes each version needs before the judge decides [200].")
    dep.add_argument("--max-error-rate", type=float, default=None,
                     help="Canary: roll back when its error rate exceeds the champion's by more "
                          "[0.02].")
    dep.add_argument("--exploration", type=float, default=None,
                     help="Bandit: the least share any version keeps [0.05].")
    dep.add_argument("--hypothesis", default=None, help="What the experiment sets out to show.")
    dep.set_defaults(handler=guarded(_deploy, refused=(PolicyError,)))

    pro = actions.add_parser("promote", help="Make the challenger the champion "
                                             "(blue-green: switch to green, then keep it).")
    pro.add_argument("name", help="Model name.")
    pro.add_argument("--version", default=None, metavar="V[#S]",
                     help="Promote this version instead of the policy's challenger.")
    pro.set_defaults(handler=guarded(_promote, refused=(PolicyError,)))

    back = actions.add_parser("rollback", help="Go back to an earlier version or snapshot.")
    back.add_argument("name", help="Model name.")
    back.add_argument("--to", default=None, metavar="VERSION[#SNAPSHOT]",
                      help="Where to go back to [the champion, blue, or the previous version].")
    back.set_defaults(handler=guarded(_rollback, refused=(PolicyError,)))

    status = actions.add_parser("status", help="The policy, each version's share and the "
                                               "judge's evidence.")
    status.add_argument("name", help="Model name.")
    status.add_argument("--judge-url", default=DEFAULT_JUDGE_URL,
                        help=f"The judge's HTTP address [{DEFAULT_JUDGE_URL}].")
    status.set_defaults(handler=guarded(_status, refused=(PolicyError,)))

    for sub in (dep, pro, back, status):
        sub.add_argument("--json", action="store_true", help="Print JSON instead of text.")
        add_settings_flags(sub, ModelsSettings)


def _settings(args: argparse.Namespace) -> ModelsSettings:
    return ModelsSettings(**collect_section_flags(args))


def _registry(settings: ModelsSettings) -> Registry:
    return Registry(settings.kafka, settings.topics, settings.registry)


def _publish(args: argparse.Namespace, registry: Registry, policy: PolicyChanged) -> int:
    registry.publish_policy(policy)
    if args.json:
        print(json.dumps(policy.model_dump(mode="json"), indent=2))
    else:
        parts = ", ".join(f"{a.role} {policy.model}@{a.version}"
                          + (f"#{a.snapshot}" if a.snapshot is not None else "")
                          + f" {a.weight:g}" for a in policy.assignments)
        print(f"{policy.model} policy #{policy.sequence}: {policy.strategy} ({parts})")
    return 0


def _deploy(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _registry(settings) as registry:
        policy = deploy(
            registry.refresh(), args.name, args.strategy, version=args.version,
            challengers=args.challenger, weight=args.weight, steps=args.step,
            metric=args.metric, margin=args.margin, alpha=args.alpha,
            min_samples=args.min_samples, max_error_rate=args.max_error_rate,
            exploration=args.exploration, hypothesis=args.hypothesis,
        )  # fmt: skip
        # The learner pairs every version's loss with the champion's from here on.
        policy = policy.model_copy(update={"examples_from": registry.examples_end()})
        return _publish(args, registry, policy)


def _promote(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _registry(settings) as registry:
        return _publish(args, registry, promote(registry.refresh(), args.name, args.version))


def _rollback(args: argparse.Namespace) -> int:
    settings = _settings(args)
    with _registry(settings) as registry:
        return _publish(args, registry, rollback(registry.refresh(), args.name, args.to))


def judge_state(url: str, timeout: float = 3.0) -> dict[str, Any] | None:
    """The judge's state from its HTTP server, None when it does not answer."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/state", timeout=timeout) as response:  # noqa: S310  # an operator-given URL
            state: dict[str, Any] = json.loads(response.read())
            return state
    except (urllib.error.URLError, OSError, ValueError) as exc:
        logger.warning("the judge at %s did not answer (%s): showing the registry only", url, exc)
        return None


def _status(args: argparse.Namespace) -> int:
    settings = _settings(args)
    view = _registry(settings).refresh()
    default = view.default_version(args.name)  # what answers with no policy
    if default is None and view.policy(args.name) is None:
        logger.error("no release of %s in the registry", args.name)
        return 1
    policy = view.policy(args.name)
    plan = plan_for(policy, args.name, default)
    routes = plan.describe(time.time()) if plan is not None else []
    state = judge_state(args.judge_url)
    judged = (state or {}).get("models", {}).get(args.name)
    learning = learning_rows(view, args.name)
    if args.json:
        print(json.dumps({
            "model": args.name,
            "policy": policy.model_dump(mode="json") if policy is not None else None,
            "routes": routes,
            "learning": learning,
            "judge": judged,
        }, indent=2))  # fmt: skip
        return 0
    _print_status(args.name, policy, routes, judged, state is not None)
    _print_learning(learning)
    return 0


def learning_rows(view: RegistryView, name: str) -> list[dict[str, Any]]:
    """Each version that learns, champion first: its latest snapshot's metrics and pairs.

    Read from the registry alone (what the learner published), so it shows with no judge too.
    """
    rows: list[dict[str, Any]] = []
    for version in learning_versions(view, name):
        latest = view.latest_snapshot(name, version)
        paired = latest.paired if latest is not None else None
        rows.append({
            "version": version,
            "snapshot": latest.snapshot if latest is not None else None,
            "examples_seen": latest.examples_seen if latest is not None else None,
            "metrics": dict(latest.metrics) if latest is not None else {},
            "paired": paired.model_dump(mode="json") if paired is not None else None,
            "mean_advantage": paired.diff_sum / paired.n if paired and paired.n else None,
        })  # fmt: skip
    return rows


def _print_learning(rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    print("  learning (test-then-train, from each version's latest snapshot; advantage = "
          "champion's loss - this version's, on the same labels):")
    for row in rows:
        snapshot = "-" if row["snapshot"] is None else f"#{row['snapshot']}"
        metrics = ", ".join(f"{name} {value:.4g}" for name, value in row["metrics"].items()
                            if name != "examples") or "-"  # fmt: skip
        paired = row["paired"]
        against = ("champion" if paired is None else
                   f"vs v{paired['against']}: n {paired['n']}, advantage "
                   + ("-" if row["mean_advantage"] is None else f"{row['mean_advantage']:+.4f}"))
        seen = "-" if row["examples_seen"] is None else str(row["examples_seen"])
        print(f"  v{row['version']:<5} {snapshot:<6} {seen:>8} examples  {metrics}  ({against})")


def _print_status(
    name: str,
    policy: PolicyChanged | None,
    routes: list[dict[str, Any]],
    judged: dict[str, Any] | None,
    judge_answered: bool,
) -> None:
    if policy is None:
        print(f"{name}: no policy; the first live version answers as champion (a newer "
              f"release answers once `riverrun models deploy` names it)")
    else:
        print(f"{name}: {policy.strategy}, policy #{policy.sequence} ({policy.action} by "
              f"{policy.decided_by} at {policy.decided_at:%Y-%m-%d %H:%M:%S})")
        if policy.reason:
            print(f"  reason: {policy.reason}")
        if policy.hypothesis:
            print(f"  hypothesis: {policy.hypothesis}")
    versions = (judged or {}).get("versions", {})
    print(f"  {'route':<10} {'version':<10} {'weight':>7} {'observed':>9} {'n':>8} "
          f"{'accuracy':>9} {'mean loss':>10} {'errors':>7}")
    for row in routes:
        pinned = row["snapshot"]
        target = f"{row['version']}" + (f"#{pinned}" if pinned is not None else "")
        ev = versions.get(str(row["version"]), {})
        print(f"  {row['route']:<10} {target:<10} {row['weight']:>7.1%} "
              f"{ev.get('observed_share', 0.0):>9.1%} {ev.get('n', 0):>8} "
              f"{ev.get('accuracy', 0.0):>9.4f} {ev.get('mean_loss', 0.0):>10.4f} "
              f"{ev.get('errors', 0):>7}")
    if not judge_answered:
        print("  judge: did not answer (--judge-url)")
        return
    judged_policy = (judged or {}).get("policy", {})
    before = (judged or {}).get("outcomes_before_experiment", 0)
    if before:
        print(f"  judge: {before} outcome(s) of predictions made before the experiment began, "
              "not counted")
    comparisons = (judged or {}).get("comparisons", [])
    # A race's candidates never answer: they are judged on losses paired with the champion's.
    paired = [c for c in comparisons if c.get("kind") == "paired"]
    if paired:
        began = str(judged_policy.get("experiment_began") or "-")[:19].replace("T", " ")
        print(f"  race: experiment #{judged_policy.get('experiment', '-')} since {began}, "
              f"alpha {paired[0]['alpha']:.3g} per candidate, margin {paired[0]['margin']:g}, "
              f"{judged_policy.get('min_samples', '-')} paired labels needed; advantage = "
              "champion's loss - candidate's (> 0: better)")
        print(f"  {'candidate':<10} {'n':>8} {'advantage':>10} {'confidence bounds':>22} "
              f"{'verdict':<12}")

        def shown(value: float | None, form: str) -> str:
            return "-" if value is None else format(value, form)

        for row in paired:
            bounds = (f"[{shown(row['lower'], '+.4f')}, {shown(row['upper'], '+.4f')}]"
                      if row["lower"] is not None or row["upper"] is not None else "-")
            print(f"  {row['challenger']:<10} {shown(row['n'], 'd'):>8} "
                  f"{shown(row['mean_advantage'], '+.4f'):>10} {bounds:>22} "
                  f"{row['verdict'] or '-':<12}")
    for comparison in comparisons:
        if comparison.get("kind") == "paired":
            continue
        numbers = comparison["numbers"]
        print(f"  judge: v{comparison['challenger']} ({comparison['role']}) against "
              f"v{comparison['control']}: {comparison['verdict']}; difference "
              f"{numbers['difference']:+.4f}, always-valid p {numbers['always_valid_p']:.3g} "
              f"(alpha {numbers['alpha']:g}, margin {numbers['margin']:g}), "
              f"n {int(numbers['n_challenger'])}/{int(numbers['n_control'])}"
              + (f"; needs {judged_policy.get('min_samples')} each" if comparison["verdict"]
                 == "too-few" else ""))
    last = (judged or {}).get("last_decision")
    if last:
        print(f"  last decision #{last['sequence']}: {last['reason']}")
