"""Tampered and forged artifacts: every way a snapshot's bytes or record can lie.

Each variant is what an attacker (or a broken disk) could put behind a snapshot record: the
stored bytes, the reference the record carries, and the error class the loader must refuse it
with. Variants that would run code point it at a canary directory, so an empty directory after
the test proves nothing ran.
"""

from __future__ import annotations

import builtins
import hashlib
import importlib
import os
import pickle
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from river.utils import math as river_math

from riverrun.schemas import ArtifactRef
from riverrun.workers.registry import Signer, seal


@dataclass(frozen=True)
class Variant:
    """One poisoned artifact: stored bytes, the record's reference, the expected refusal."""

    name: str
    data: bytes
    ref: ArtifactRef
    refused_as: str


class _Calls:
    """Pickles as a call of `target(*args)`: what a malicious artifact does on load."""

    def __init__(self, target: Callable[..., Any], *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.target, self.args


def _flip(data: bytes, *positions: int) -> bytes:
    out = bytearray(data)
    for position in positions:
        out[position] ^= 0x01
    return bytes(out)


# Hand-written opcode streams a pickler would never write, each hiding os.system differently.
_MEMO_HIDDEN = (b"\x80\x05\x8c\x02os\x94" b"0"  # push "os", memoize, pop it
                b"h\x00\x8c\x06system\x93"  # fetch "os" back from the memo: os.system
                b"\x8c\x04true\x85R.")
_COMPUTED = (b"\x80\x05\x8c\x08builtins\x8c\x03str\x93"  # str, allowed
             b"\x8c\x02os\x85R"  # str("os"), a module name only known at load time
             b"\x8c\x06system\x93\x8c\x04true\x85R.")
_PROTOCOL_0 = b"(S'true'\nios\nsystem\n."  # INST os.system
_EXTENSION = b"\x80\x05\x82\x01."  # EXT1: a global from copyreg's extension registry
_PERSISTENT = b"\x80\x05\x8c\x01x\x94Q."  # BINPERSID


def variants(
    good: bytes, older: tuple[bytes, ArtifactRef], signer: Signer, subject: str,
    canary: Path, max_bytes: int,
) -> list[Variant]:
    """Every poisoned variant of `good` as snapshot `subject`; `older` is a real older snapshot."""
    ref = seal(good, signer, "", subject)
    stranger = Signer(b"somebody else's key")
    canary.mkdir(parents=True, exist_ok=True)

    def signed(name: str, data: bytes, refused_as: str) -> Variant:
        return Variant(name, data, seal(data, signer, "", subject), refused_as)

    def calls(target: Callable[..., Any], *args: Any) -> bytes:
        return pickle.dumps(_Calls(target, *args), protocol=5)

    bomb = calls(bytearray, 8 * 2**30)  # eight gigabytes of zeros, asked for in 60 bytes
    oversized = os.urandom(max_bytes + 1024)
    older_data, older_ref = older
    return [
        Variant("bit-flip-first-byte", _flip(good, 0), ref, "BadSignature"),
        Variant("bit-flip-middle", _flip(good, len(good) // 2), ref, "BadSignature"),
        Variant("bit-flip-last-byte", _flip(good, len(good) - 1), ref, "BadSignature"),
        Variant("bit-flips-scattered", _flip(good, *range(3, len(good), 97)), ref, "BadSignature"),
        Variant("truncated-by-one", good[:-1], ref, "Truncated"),
        Variant("truncated-to-half", good[: len(good) // 2], ref, "Truncated"),
        Variant("extended", good + b"\x00" * 16, ref, "Truncated"),
        Variant("emptied", b"", ref, "Truncated"),
        Variant("wrong-key", good, seal(good, stranger, "", subject), "BadSignature"),
        Variant("signature-removed", good, ref.model_copy(update={"signature": ""}),
                "BadSignature"),
        Variant("signature-not-hex", good, ref.model_copy(update={"signature": "zz" * 32}),
                "BadSignature"),
        Variant("signature-of-the-bytes-alone", good, seal(good, signer, ""), "BadSignature"),
        Variant("replayed-older-snapshot", older_data, older_ref, "BadSignature"),
        Variant("signed-for-another-model", good,
                seal(good, signer, "", "someone-else" + subject[subject.index("@"):]),
                "BadSignature"),
        Variant("forged-digest", good,
                ref.model_copy(update={"sha256": hashlib.sha256(b"x").hexdigest()}),
                "BadDigest"),
        Variant("size-claimed-over-limit", good, ref.model_copy(update={"size": max_bytes + 1}),
                "Oversized"),
        signed("oversized-artifact", oversized, "Oversized"),
        signed("signed-os-system", calls(os.system, f"touch {canary / 'os-system'}"),
               "ForbiddenGlobal"),
        signed("signed-eval", calls(builtins.eval, f"open({str(canary / 'eval')!r}, 'w')"),
               "ForbiddenGlobal"),
        signed("signed-exec", calls(builtins.exec, f"open({str(canary / 'exec')!r}, 'w')"),
               "ForbiddenGlobal"),
        signed("signed-subprocess", calls(subprocess.Popen, ["touch", str(canary / "popen")]),
               "ForbiddenGlobal"),
        signed("signed-import-module", calls(importlib.import_module, "antigravity"),
               "ForbiddenGlobal"),
        signed("signed-getattr", calls(builtins.getattr, "text", "upper"), "ForbiddenGlobal"),
        signed("signed-river-function", calls(river_math.sigmoid, 0.0), "ForbiddenGlobal"),
        signed("signed-pickle-bomb", bomb, "ForbiddenGlobal"),
        Variant("unsigned-pickle-bomb", bomb, seal(bomb, stranger, "", subject), "BadSignature"),
        signed("signed-global-hidden-in-memo", _MEMO_HIDDEN, "ForbiddenGlobal"),
        signed("signed-global-computed-at-load", _COMPUTED, "ForbiddenGlobal"),
        signed("signed-protocol-0-inst", _PROTOCOL_0, "ForbiddenGlobal"),
        signed("signed-extension-code", _EXTENSION, "ForbiddenGlobal"),
        signed("signed-persistent-id", _PERSISTENT, "ForbiddenGlobal"),
        signed("signed-garbage", b"\x80\x05not a pickle at all", "NotAPickle"),
        signed("signed-empty", b"", "NotAPickle"),
    ]
