"""The opcode scan refuses forbidden globals before unpickling; signatures bind a snapshot's
identity, so a validly signed artifact cannot be replayed as another snapshot."""

from __future__ import annotations

import os
import pickle
from typing import Any

import pytest
from river import linear_model, preprocessing

from riverrun.workers.registry import (
    RefusedArtifact,
    Signer,
    dump_model,
    open_artifact,
    scan_artifact,
    seal,
    snapshot_subject,
)

SIGNER = Signer(b"scan-key")
LIMIT = 1 << 20


class _Calls:
    def __init__(self, target: Any, *args: Any) -> None:
        self.target, self.args = target, args

    def __reduce__(self) -> tuple[Any, ...]:
        return self.target, self.args


def test_a_river_model_passes_the_scan() -> None:
    model = preprocessing.StandardScaler() | linear_model.LogisticRegression()
    model.learn_one({"a": 1.0}, True)
    scan_artifact(dump_model(model))


@pytest.mark.parametrize(("data", "named"), [
    (pickle.dumps(_Calls(os.system, "true"), protocol=5), "posix.system"),
    (pickle.dumps(_Calls(os.system, "true"), protocol=0), "posix.system"),
    (pickle.dumps(_Calls(bytearray, 1 << 33), protocol=5), "builtins.bytearray"),
    (pickle.dumps(_Calls(bytes, 1 << 33), protocol=2), "builtins.bytes"),
    (pickle.dumps(_Calls(range, 1 << 40), protocol=5), "builtins.range"),
    (b"\x80\x05\x8c\x02os\x94" b"0" b"h\x00\x8c\x06system\x93\x8c\x04true\x85R.", "os.system"),
])  # fmt: skip
def test_forbidden_globals_are_named_without_running_anything(data: bytes, named: str) -> None:
    with pytest.raises(RefusedArtifact, match=named.replace(".", r"\.")) as caught:
        scan_artifact(data)
    assert caught.value.error_class == "ForbiddenGlobal"


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x80\x05\x8c\x08builtins\x8c\x03str\x93\x8c\x02os\x85R\x8c\x06system\x93.",
     "computed at load time"),
    (b"\x80\x05\x82\x01.", "EXT1"),
    (b"\x80\x05\x8c\x01x\x94Q.", "BINPERSID"),
])  # fmt: skip
def test_what_cannot_be_resolved_statically_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(RefusedArtifact, match=reason) as caught:
        scan_artifact(data)
    assert caught.value.error_class == "ForbiddenGlobal"


@pytest.mark.parametrize("data", [b"", b"\x80\x05not a pickle", b"\x80\x05t.", b"\x80\x05\x94."])
def test_unreadable_bytes_are_not_a_pickle(data: bytes) -> None:
    with pytest.raises(RefusedArtifact) as caught:
        scan_artifact(data)
    assert caught.value.error_class == "NotAPickle"


def test_a_signature_binds_the_snapshot_it_was_made_for() -> None:
    data = dump_model(linear_model.LinearRegression())
    subject = snapshot_subject("fraud", 2, 7)
    assert subject == "fraud@2#7"
    ref = seal(data, SIGNER, "mem://x", subject)
    assert open_artifact(data, ref, SIGNER, LIMIT, subject) is not None
    for other in (snapshot_subject("fraud", 2, 8), snapshot_subject("fraud", 3, 7), None):
        with pytest.raises(RefusedArtifact, match="copied from another snapshot") as caught:
            open_artifact(data, ref, SIGNER, LIMIT, other)
        assert caught.value.error_class == "BadSignature"
    # No subject and bytes can pass for another (subject, bytes) pair.
    assert SIGNER.sign(b"b", "a") != SIGNER.sign(b"", "a\x00b")
    assert SIGNER.verify(data, SIGNER.sign(data, subject), subject)
