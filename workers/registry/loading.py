"""Trusting artifact bytes: seal them on the way out, check them before a byte is unpickled.

`open_artifact` checks, in order, the size, the HMAC signature (over the snapshot's identity
and the bytes, so a validly signed artifact cannot be replayed as another snapshot) and the
sha256, then reads the pickle's opcodes without running them (`pickle_scan`): a global outside
the allow-list (`allowlist.py`: exactly what the classes a spec can build pickle into) is
refused, and so is a Rust-backed class built from arguments instead of its state. Then the
artifact is loaded once in a forked child, under an address-space budget and a deadline, and
asked to predict (and learn) a probe row with a feature it never saw: an abort, a Rust panic, a
budget breach or a hang kills the child, not the worker, and refuses the artifact. Only then is
it unpickled here, with an `Unpickler` whose `find_class` admits the same list again and turns
`getattr` into a lookup of a River method by its name.
"""

from __future__ import annotations

import hashlib
import inspect
import io
import os
import pickle
import resource
import signal
import time
from collections.abc import Callable, Iterable
from typing import Any

from riverrun.schemas import ArtifactRef
from riverrun.workers.registry import allowlist
from riverrun.workers.registry.pickle_scan import ScanRefusal, scan_pickle
from riverrun.workers.registry.signing import Signer
from riverrun.workers.runtime.errors import RiverrunError


class RefusedArtifact(RiverrunError):
    """Artifact bytes that must not be loaded. Disposition: keep serving the current snapshot.

    `error_class` is one of `Oversized`, `BadSignature`, `BadDigest`, `Truncated`,
    `ForbiddenGlobal`, `NotAPickle`; `reason` says what was found.
    """

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(f"{error_class}: {reason}")
        self.error_class = error_class
        self.reason = reason


def snapshot_subject(model: str, version: int, snapshot: int) -> str:
    """What a snapshot's signature is bound to besides its bytes: `model@version#snapshot`."""
    return f"{model}@{version}#{snapshot}"


def seal(data: bytes, signer: Signer, location: str, subject: str | None = None) -> ArtifactRef:
    """The reference a snapshot record carries: location, size, sha256 and signature.

    With a `subject` (`snapshot_subject`) the signature covers it too, so the artifact verifies
    only as that snapshot.
    """
    return ArtifactRef(
        location=location,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        signature=signer.sign(data, subject),
    )


def is_allowed_global(module: str, name: str, feature_modules: Iterable[str] = ()) -> bool:
    """Whether a pickle may name `module.name`.

    It may name what the spec grammar's classes pickle into, and functions of the operator's
    feature modules (`RIVERRUN_REGISTRY__FEATURE_MODULES`).
    """
    return (module, name) in allowlist.committed() or (
        module in feature_modules and name.isidentifier()
    )


def _admits(feature_modules: Iterable[str]) -> Callable[[str, str], bool]:
    modules = frozenset(feature_modules)
    return lambda module, name: is_allowed_global(module, name, modules)


# Rust-backed classes whose constructor takes the data itself (a dict the pickle spells out),
# not a size to allocate.
_BUILT_FROM_DATA = frozenset({("river._river_rust.vectordict", "VectorDict")})


def is_state_only(module: str, name: str) -> bool:
    """Whether `module.name` is a Rust-backed class built from its state and small constants.

    Their constructors allocate what they are told (a window of 10**12 aborts the process), so
    a pickle may not call them with anything else (see `pickle_scan`).
    """
    return (module.startswith("river._river_rust.") and name[:1].isupper()
            and (module, name) not in _BUILT_FROM_DATA)  # fmt: skip


# The methods a River object's pickle may name through `getattr` (bound methods it keeps), and
# the one `str` method a text extractor keeps as its preprocessor.
_STR_METHODS = frozenset({"lower"})


def _river_method(obj: Any, name: str) -> Any:
    """`getattr` as a pickle may use it: a River object's own method, by name, and no more."""
    if isinstance(obj, type):
        if obj is str and name in _STR_METHODS:
            return getattr(str, name)
    elif (name.isidentifier() and not name.startswith("__")
          and type(obj).__module__.startswith("river.")):  # fmt: skip
        found = inspect.getattr_static(type(obj), name, None)
        if inspect.isfunction(found) and found.__module__.startswith("river."):
            return getattr(obj, name)
    raise RefusedArtifact("ForbiddenGlobal", f"the pickle asks for attribute {name!r} of a "
                          f"{type(obj).__name__}, which is not a River method")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, feature_modules: Iterable[str]) -> None:
        super().__init__(io.BytesIO(data))
        self.feature_modules = frozenset(feature_modules)

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in allowlist.committed():
            if (module, name) == ("builtins", "getattr"):
                return _river_method
            return super().find_class(module, name)
        if is_allowed_global(module, name, self.feature_modules):
            found = super().find_class(module, name)
            if inspect.isfunction(found) and found.__module__ == module:
                return found
            raise RefusedArtifact("ForbiddenGlobal", f"the pickle names {module}.{name}, which "
                                  f"is not a function defined in feature module {module}")
        hint = (" (a function of a notebook or script: move it into a module installed where "
                "the workers run, and allow that module)" if module == "__main__" else "")
        raise RefusedArtifact(
            "ForbiddenGlobal",
            f"the pickle names {module}.{name}, which no model a spec can build pickles into "
            "(riverrun.workers.registry.allowlist) and is not in an allowed feature module "
            f"(RIVERRUN_REGISTRY__FEATURE_MODULES){hint}; refusing to load it",
        )


def restricted_loads(
    data: bytes, where: str = "the artifact", feature_modules: Iterable[str] = ()
) -> Any:
    """Unpickle with the allow-list only; no size, signature or digest check (see `open_artifact`).

    Raises:
        RefusedArtifact: a forbidden global, or bytes that are not a pickle.

    """
    try:
        return _RestrictedUnpickler(data, feature_modules).load()
    except RefusedArtifact:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001  # a Rust panic (pyo3) is a BaseException
        raise RefusedArtifact(
            "NotAPickle", f"{where} could not be unpickled: {type(exc).__name__}: {exc}"
        ) from exc


def scan_artifact(
    data: bytes, where: str = "the artifact", feature_modules: Iterable[str] = ()
) -> None:
    """Refuse a pickle naming a global outside the allow-list, without running any of it.

    Raises:
        RefusedArtifact: `ForbiddenGlobal`, or `NotAPickle` for bytes the scan cannot read.

    """
    try:
        scan_pickle(data, _admits(feature_modules), where, is_state_only)
    except ScanRefusal as exc:
        raise RefusedArtifact(exc.error_class, exc.reason) from None


def open_artifact(
    data: bytes,
    ref: ArtifactRef,
    signer: Signer,
    max_bytes: int,
    subject: str | None = None,
    budget_bytes: int = 1024 * 1024 * 1024,
    deadline_s: float = 30.0,
    feature_modules: Iterable[str] = (),
) -> Any:
    """Check size, signature (bound to `subject`) and digest, scan the opcodes, then unpickle.

    Raises:
        RefusedArtifact: any check fails; nothing of the pickle has run by then: the opcode
            scan refuses a global outside the allow-list before unpickling starts.

    """
    if len(data) > max_bytes or ref.size > max_bytes:
        raise RefusedArtifact(
            "Oversized",
            f"{ref.location} is {max(len(data), ref.size)} bytes, over the limit of {max_bytes} "
            "(RIVERRUN_REGISTRY__MAX_ARTIFACT_BYTES)",
        )
    if len(data) != ref.size:
        raise RefusedArtifact(
            "Truncated", f"{ref.location} has {len(data)} bytes, the record says {ref.size}"
        )
    if not signer.verify(data, ref.signature, subject):
        raise RefusedArtifact(
            "BadSignature",
            f"{ref.location} is not signed with this signing key"
            + (f" as {subject}" if subject else "")
            + ": check that RIVERRUN_REGISTRY__SIGNING_KEY is the key the publisher used, and "
            "that the record was not copied from another snapshot",
        )
    if hashlib.sha256(data).hexdigest() != ref.sha256:
        raise RefusedArtifact("BadDigest", f"{ref.location} does not match its sha256")
    scan_artifact(data, ref.location, feature_modules)
    tried = (ref.sha256, tuple(sorted(feature_modules)), budget_bytes)
    if tried not in _TRIED:
        trial_load(data, ref.location, budget_bytes, deadline_s, feature_modules)
        _TRIED[tried] = None
        while len(_TRIED) > _TRIED_KEPT:
            _TRIED.pop(next(iter(_TRIED)))
    return restricted_loads(data, ref.location, feature_modules)


# Digests (with the modules and budget they were tried under) of artifacts that passed a trial
# load in this process: the same bytes load the same way, so a fleet of models released from one
# artifact (per-key models start so) is tried once, not once per model.
_TRIED: dict[tuple[str, tuple[str, ...], int], None] = {}
_TRIED_KEPT = 4096


def trial_load(
    data: bytes, where: str, budget_bytes: int, deadline_s: float,
    feature_modules: Iterable[str] = (),
) -> None:
    """Load the artifact in a forked child first; return if it loads and answers a probe.

    The child may add at most `budget_bytes` to its address space and must finish within
    `deadline_s`; it loads the pickle, then predicts and learns a probe row that has a feature
    the model never saw (what makes a lazily planted default factory run). A crash, a Rust
    panic, a budget breach or a hang happens in the child: the worker only reads its exit.

    Raises:
        RefusedArtifact: `TrialFailed`, saying how the child ended.

    """
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: load, probe, and leave without running anything of the parent's
        os.close(reader)
        code, said = 0, b""
        try:
            _limit_address_space(budget_bytes)
            _probe(restricted_loads(data, where, feature_modules))
        except RefusedArtifact as exc:
            code, said = 3, f"{exc.error_class}\t{exc.reason}".encode()
        except BaseException as exc:  # noqa: BLE001  # how the child ended is all that is told
            code, said = 4, f"TrialFailed\t{type(exc).__name__}: {exc}".encode()[:2000]
        os.write(writer, said)
        os._exit(code)
    os.close(writer)
    try:
        _wait_for_trial(pid, where, budget_bytes, deadline_s, reader)
    finally:
        os.close(reader)


def _wait_for_trial(pid: int, where: str, budget_bytes: int, deadline_s: float,
                    reader: int) -> None:
    deadline = time.monotonic() + deadline_s
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise RefusedArtifact("TrialFailed", f"{where} did not load within {deadline_s:g} s")
        time.sleep(0.002)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
        return
    said = os.read(reader, 4096).decode("utf-8", "replace")
    if said:
        error_class, _, reason = said.partition("\t")
        raise RefusedArtifact(error_class, f"{where}: {reason}" if error_class == "TrialFailed"
                              else reason)  # fmt: skip
    if os.WIFSIGNALED(status):
        how = f"killed the loading process ({signal.Signals(os.WTERMSIG(status)).name})"
    else:
        how = f"ended its trial load with exit {os.WEXITSTATUS(status)}"
    raise RefusedArtifact("TrialFailed", f"{where} {how}, within a budget of "
                          f"{budget_bytes // (1024 * 1024)} MiB: refusing it")


def _limit_address_space(budget_bytes: int) -> None:
    with open("/proc/self/statm", "rb") as statm:  # noqa: PTH123  # Linux's own accounting
        pages = int(statm.read().split()[0])
    limit = pages * resource.getpagesize() + budget_bytes
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _probe(estimator: Any) -> None:
    """Predict and learn a row with an unseen feature; only crashes matter, not exceptions."""
    row = {"riverrun-probe": 0.5}
    for call in ("predict_proba_one", "predict_one"):
        method = getattr(estimator, call, None)
        if method is not None:
            try:
                method(row)
            except Exception:  # noqa: BLE001, S112  # a refusal of the probe row is fine
                continue
    learn = getattr(estimator, "learn_one", None)
    if learn is not None:
        for label in (True, 1.0):
            try:
                learn(row, label)
            except Exception:  # noqa: BLE001, S112  # as above
                continue
