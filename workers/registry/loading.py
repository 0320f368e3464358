"""Trusting artifact bytes: seal them on the way out, check them before a byte is unpickled.

`open_artifact` checks, in order, the size, the HMAC signature (over the snapshot's identity
and the bytes, so a validly signed artifact cannot be replayed as another snapshot) and the
sha256, then reads the pickle's opcodes without running them (`pickle_scan`) and refuses any
global outside the allow-list, and only then unpickles, with an `Unpickler` whose `find_class`
admits the same list again: River classes, the NumPy names an array needs, a few `collections`
types, `functools.partial`, `copyreg._reconstructor`, `random.Random` and plain builtins. A
pickle naming anything else (`os.system`, `builtins.eval`, a river function, `bytearray` asked
for eight gigabytes) is refused before a single opcode runs.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import pickle
from typing import Any

from riverrun.schemas import ArtifactRef
from riverrun.workers.registry.pickle_scan import ScanRefusal, scan_pickle
from riverrun.workers.registry.signing import Signer
from riverrun.workers.runtime.errors import RiverrunError

_ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    # Not bytes, bytearray or range: called with one integer they allocate whatever it says
    # (a pickle bomb), and protocol 5 writes bytes and bytearrays with opcodes of their own.
    ("builtins", name) for name in (
        "set", "frozenset", "list", "dict", "tuple", "float", "int", "str",
        "bool", "complex", "slice", "object",
    )
} | {
    ("collections", name) for name in ("defaultdict", "OrderedDict", "Counter", "deque")
} | {
    ("functools", "partial"),
    ("copyreg", "_reconstructor"),
    ("random", "Random"),
    # River's one static-method default factory (GaussianNB's per-feature Gaussians).
    ("river.naive_bayes.gaussian", "GaussianNB._make_gaussian"),
} | {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
} | {
    ("numpy", "ndarray"), ("numpy", "dtype"),
} | {
    ("numpy", f"dtypes.{kind}DType") for kind in ("Float64", "Float32", "Int64", "Int32", "Bool")
} | {
    ("numpy.random._pickle", name)
    for name in ("__randomstate_ctor", "__generator_ctor", "__bit_generator_ctor")
} | {
    ("numpy.random.mtrand", "RandomState"), ("numpy.random._generator", "Generator"),
    ("numpy.random._pcg64", "PCG64"), ("numpy.random._mt19937", "MT19937"),
})  # fmt: skip


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


def is_allowed_global(module: str, name: str) -> bool:
    """Whether a pickle may name `module.name`: River classes and the fixed list above."""
    if (module, name) in _ALLOWED_GLOBALS:
        return True
    if module != "river" and not module.startswith("river."):
        return False
    if "." in name or name.startswith("_"):
        return False
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return False
    return isinstance(obj, type) and obj.__module__.startswith("river")


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not is_allowed_global(module, name):
            raise RefusedArtifact(
                "ForbiddenGlobal",
                f"the pickle names {module}.{name}, which is not a River class nor on the "
                "allow-list of workers.registry.loading; refusing to load it",
            )
        return super().find_class(module, name)


def restricted_loads(data: bytes, where: str = "the artifact") -> Any:
    """Unpickle with the allow-list only; no size, signature or digest check (see `open_artifact`).

    Raises:
        RefusedArtifact: a forbidden global, or bytes that are not a pickle.

    """
    try:
        return _RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedArtifact:
        raise
    except Exception as exc:
        raise RefusedArtifact(
            "NotAPickle", f"{where} could not be unpickled: {type(exc).__name__}: {exc}"
        ) from exc


def scan_artifact(data: bytes, where: str = "the artifact") -> None:
    """Refuse a pickle naming a global outside the allow-list, without running any of it.

    Raises:
        RefusedArtifact: `ForbiddenGlobal`, or `NotAPickle` for bytes the scan cannot read.

    """
    try:
        scan_pickle(data, is_allowed_global, where)
    except ScanRefusal as exc:
        raise RefusedArtifact(exc.error_class, exc.reason) from None


def open_artifact(
    data: bytes, ref: ArtifactRef, signer: Signer, max_bytes: int, subject: str | None = None
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
    scan_artifact(data, ref.location)
    return restricted_loads(data, ref.location)
