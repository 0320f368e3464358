"""Reading a pickle's opcodes without running any of them: which globals it would import.

`scan_pickle` walks the opcode stream with `pickletools.genops` and a model of the unpickler's
stack that knows only what a static reading can know: the strings pushed, the memo, the marks.
Every global the pickle names (`GLOBAL`, `INST`, `STACK_GLOBAL`) is resolved and checked before
a single opcode is executed, so a refused artifact runs no code and allocates nothing it asks
for. What cannot be resolved statically is refused, never guessed: a `STACK_GLOBAL` whose
operands were computed at load time, extension codes and persistent ids.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
from collections.abc import Callable

# Opcodes that push a string operand a later STACK_GLOBAL may consume.
_STRINGS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE",
                      "SHORT_BINSTRING", "BINSTRING", "STRING"})
_PUTS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GETS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_UNSUPPORTED = frozenset({"EXT1", "EXT2", "EXT4", "PERSID", "BINPERSID"})


class _Unknown:
    """A stack slot whose value only exists at load time."""


_UNKNOWN = _Unknown()
_MARK = object()


class ScanRefusal(Exception):
    """What the scan found; `error_class` is `ForbiddenGlobal` or `NotAPickle`."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def scan_pickle(data: bytes, allowed: Callable[[str, str], bool], where: str) -> int:
    """Check every global a pickle names against `allowed`; return how many opcodes it has.

    Raises:
        ScanRefusal: a global outside the allow-list (`ForbiddenGlobal`), or bytes that are not
            a pickle this scan can read to its end (`NotAPickle`).

    """
    stack: list[object] = []
    memo: dict[int, object] = {}
    count = 0
    protocol = 0

    def check(module: object, name: object) -> None:
        if not isinstance(module, str) or not isinstance(name, str):
            raise ScanRefusal("ForbiddenGlobal", f"{where} imports a global computed at load "
                              "time, which cannot be checked before loading")
        if protocol < 3:  # the Python 2 names the unpickler translates (fix_imports)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not allowed(module, name):
            raise ScanRefusal("ForbiddenGlobal", f"the pickle names {module}.{name}, which is "
                              "not a River class nor on the allow-list of "
                              "riverrun.workers.registry.loading; refusing to load it")

    try:
        for opcode, arg, _pos in pickletools.genops(data):
            count += 1
            name = opcode.name
            if name in _UNSUPPORTED:
                raise ScanRefusal("ForbiddenGlobal", f"{where} uses {name}, which riverrun "
                                  "artifacts never contain")
            if name == "PROTO":
                protocol = int(arg)  # type: ignore[arg-type]  # PROTO's argument is an int
            elif name in ("GLOBAL", "INST"):
                module, _, attribute = str(arg).partition(" ")
                check(module, attribute)
            elif name == "STACK_GLOBAL":
                if len(stack) < 2:
                    raise ScanRefusal("NotAPickle", f"{where}: STACK_GLOBAL on a short stack")
                operand, owner = stack.pop(), stack.pop()
                check(owner, operand)
                stack.append(_UNKNOWN)
                continue
            if name in _PUTS or name == "MEMOIZE":
                if not stack or stack[-1] is _MARK:
                    raise ScanRefusal("NotAPickle", f"{where}: {name} with nothing to store")
                memo[len(memo) if name == "MEMOIZE" else int(arg)] = stack[-1]  # type: ignore[arg-type]  # PUT args are ints
                continue
            if name in _GETS:
                stack.append(memo.get(int(arg), _UNKNOWN))  # type: ignore[arg-type]  # GET args are ints
                continue
            _apply_stack_effect(opcode, stack, where)
            if name in _STRINGS:
                stack[-1] = arg if isinstance(arg, str) else _UNKNOWN
    except ScanRefusal:
        raise
    except Exception as exc:  # genops raises ValueError and friends on bytes it cannot read
        raise ScanRefusal("NotAPickle", f"{where} is not a readable pickle: "
                          f"{type(exc).__name__}: {exc}") from exc
    if count == 0:
        raise ScanRefusal("NotAPickle", f"{where} is empty")
    return count


def _apply_stack_effect(opcode: pickletools.OpcodeInfo, stack: list[object], where: str) -> None:
    """Pop and push as the unpickler would, with unknown values (pickletools.dis's model)."""
    before, after = opcode.stack_before, opcode.stack_after
    to_pop = len(before)
    if pickletools.markobject in before or (opcode.name == "POP" and stack and stack[-1] is _MARK):
        if _MARK not in stack:
            raise ScanRefusal("NotAPickle", f"{where}: {opcode.name} without a MARK")
        while stack.pop() is not _MARK:
            pass
        to_pop = before.index(pickletools.markobject) if pickletools.markobject in before else 0
    if to_pop > len(stack):
        raise ScanRefusal("NotAPickle", f"{where}: {opcode.name} on a short stack")
    if to_pop:
        del stack[-to_pop:]
    for item in after:
        stack.append(_MARK if item is pickletools.markobject else _UNKNOWN)
