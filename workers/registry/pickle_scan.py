"""Reading a pickle's opcodes without running any of them: which globals it would import.

`scan_pickle` walks the opcode stream with `pickletools.genops` and a model of the unpickler's
stack that knows only what a static reading can know: the strings pushed, the memo, the marks.
Every global the pickle names (`GLOBAL`, `INST`, `STACK_GLOBAL`) is resolved and checked before
a single opcode is executed, so a refused artifact runs no code and allocates nothing it asks
for. What cannot be resolved statically is refused, never guessed: a `STACK_GLOBAL` whose
operands were computed at load time, extension codes and persistent ids.

Some classes may only be rebuilt from their pickled state and small constants: the Rust-backed
ones allocate whatever their constructor is told. Such a class may appear only as the class of
a `NEWOBJ` whose arguments are none, or numbers written in the pickle itself and no larger than
`MAX_CONSTRUCTOR_NUMBER` (what pickling them writes); passed to anything else, or built from
anything else, it is refused.
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


class _StateOnly:
    """A class that may only be rebuilt from its state (see the module's docstring)."""

    def __init__(self, name: str) -> None:
        self.name = name


class _Numbers(tuple):  # type: ignore[type-arg]  # a tuple of numbers the pickle spells out
    """Constant numbers on the stack: one pushed (a 1-tuple), or a tuple built of them."""


MAX_CONSTRUCTOR_NUMBER = 100_000
_NUMBER_OPCODES = frozenset({"BININT", "BININT1", "BININT2", "INT", "LONG", "LONG1", "LONG4",
                             "BINFLOAT", "FLOAT"})
_TUPLE_OPCODES = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
_UNKNOWN = _Unknown()
_EMPTY_TUPLE = _Numbers()
_MARK = object()


class ScanRefusal(Exception):
    """What the scan found; `error_class` is `ForbiddenGlobal` or `NotAPickle`."""

    def __init__(self, error_class: str, reason: str) -> None:
        super().__init__(reason)
        self.error_class = error_class
        self.reason = reason


def scan_pickle(
    data: bytes,
    allowed: Callable[[str, str], bool],
    where: str,
    state_only: Callable[[str, str], bool] = lambda _module, _name: False,
) -> int:
    """Check every global a pickle names against `allowed`; return how many opcodes it has.

    Raises:
        ScanRefusal: a global outside the allow-list (`ForbiddenGlobal`), a `state_only` class
            called or passed on (`ForbiddenCall`), or bytes that are not a pickle this scan can
            read to its end (`NotAPickle`).

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
                stack.append(_StateOnly(f"{owner}.{operand}")
                             if state_only(str(owner), str(operand)) else _UNKNOWN)  # fmt: skip
                continue
            elif name == "NEWOBJ" and len(stack) >= 2 and isinstance(stack[-2], _StateOnly):
                arguments = stack[-1]
                if not (isinstance(arguments, _Numbers) and all(
                        abs(n) <= MAX_CONSTRUCTOR_NUMBER for n in arguments)):  # fmt: skip
                    raise ScanRefusal("ForbiddenCall", f"{where} builds {stack[-2].name} from "
                                      "arguments other than small constant numbers; it is only "
                                      "ever rebuilt from its state")
                del stack[-2:]
                stack.append(_UNKNOWN)
                continue
            elif name == "TUPLE" and _MARK in stack:
                at = len(stack) - 1 - stack[::-1].index(_MARK)
                items = stack[at + 1:]
                if items and all(isinstance(i, _Numbers) and len(i) == 1 for i in items):
                    del stack[at:]
                    stack.append(_Numbers(i[0] for i in items))  # type: ignore[index]  # 1-tuples
                    continue
            elif name in _TUPLE_OPCODES and len(stack) >= _TUPLE_OPCODES[name]:
                items = stack[-_TUPLE_OPCODES[name]:]
                if all(isinstance(i, _Numbers) and len(i) == 1 for i in items):
                    del stack[-_TUPLE_OPCODES[name]:]
                    stack.append(_Numbers(i[0] for i in items))  # type: ignore[index]  # as above
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
            elif name == "EMPTY_TUPLE":
                stack[-1] = _EMPTY_TUPLE
            elif name in _NUMBER_OPCODES and isinstance(arg, int | float):
                stack[-1] = _Numbers((arg,))
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
        while (item := stack.pop()) is not _MARK:
            _not_passed_on(item, opcode.name, where)
        to_pop = before.index(pickletools.markobject) if pickletools.markobject in before else 0
    if to_pop > len(stack):
        raise ScanRefusal("NotAPickle", f"{where}: {opcode.name} on a short stack")
    if to_pop:
        if opcode.name != "POP":  # dropping a class is harmless; using it is what is checked
            for item in stack[-to_pop:]:
                _not_passed_on(item, opcode.name, where)
        del stack[-to_pop:]
    for item in after:
        stack.append(_MARK if item is pickletools.markobject else _UNKNOWN)


def _not_passed_on(item: object, opcode: str, where: str) -> None:
    if isinstance(item, _StateOnly):
        raise ScanRefusal("ForbiddenCall", f"{where} passes {item.name} to {opcode}; it is only "
                          "ever rebuilt from its state")
