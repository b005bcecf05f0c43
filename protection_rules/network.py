"""The only module that imports durable-rules: a thin synchronous driver over its C API.

Why not `durable.engine.Host`: it starts background dispatcher threads that race synchronous
calls, and it is about 5x slower (docs/durable-rules.md, sections 1 and 5). The traps
this driver designs around, each pinned by tests/test_network.py:

- events fire only the highest-salience match: we assert *facts*, so every match fires;
- a fact that matches no rule (rc 1) is an error: a sentinel rule always matches, and its
  absence from the end of the agenda is an engine failure;
- `delete_state` on a state that never ran an action segfaults, and the 1025th live state id
  poisons the ruleset: we never delete states; a small pool of long-lived state ids is reused
  (assert, drain, retract), one thread per id at a time;
- mixed-type and missing-field comparisons answer silently wrong: every fact is type-checked
  against the compiler's declared fact types before it reaches the engine;
- on Python 3.13 its C extension needs `PyEval_CallObject`, which 3.13 removed: a shim of ours
  provides it (`_import_engine`). The extension calls it only from the storage callbacks, which
  this driver never registers; those call sites were compiled against an implicit `int`
  declaration that truncates the returned pointer, so they must stay unregistered.
"""

from __future__ import annotations

import importlib
import os
import queue
import sys
import threading
from collections.abc import Mapping
from types import ModuleType
from typing import Any

from .engine_json import engine_json, fact_json
from .errors import EngineFailure

DURABLE_RULES = "durable-rules==2.0.28"  # the version pinned in pyproject.toml
PYEVAL_SHIM = "_protection_rules_pyeval_shim"  # built from _pyeval_shim.c beside this file


def _import_engine(version: tuple[int, int] = sys.version_info[:2]) -> ModuleType:
    """durable-rules' C extension, on Python 3.13 and later after the shim it links against."""
    python = ".".join(map(str, version))
    if version >= (3, 13):
        # RTLD_GLOBAL puts the shim's `PyEval_CallObject` where the dynamic linker resolves
        # the extension's undefined reference to it; the flags are restored at once.
        flags = sys.getdlopenflags()
        sys.setdlopenflags(flags | os.RTLD_GLOBAL)
        try:
            importlib.import_module(PYEVAL_SHIM)
        except ImportError as exc:
            raise ImportError(
                f"`{PYEVAL_SHIM}`, which durable-rules needs on python {python}, does not import: {exc}: "
                "reinstall protection-rules with this interpreter (`pip install --force-reinstall .`) "
                "so that the shim is built"
            ) from exc
        finally:
            sys.setdlopenflags(flags)
    try:
        return importlib.import_module("durable_rules_engine")
    except ImportError as exc:
        raise ImportError(
            f"durable-rules' C extension `durable_rules_engine` does not import on python {python}: {exc}: "
            f"rebuild it with this interpreter (`pip install --force-reinstall --no-cache-dir {DURABLE_RULES}`; "
            "it compiles with gcc, see the README's installing section for gcc 14 and newer)"
        ) from exc


_dre = _import_engine()


def _encode(fact: Mapping[str, Any], floats: tuple[str, ...]) -> str:
    try:
        return fact_json(fact, floats)
    except ValueError as exc:  # NaN or infinity
        raise EngineFailure(f"fact is not finite JSON: {exc}") from None


MAX_STATES = 900  # the C engine holds at most 1024 live state ids per ruleset


class RuleNetwork:
    """One durable-rules ruleset handle and its pool of reusable state ids."""

    def __init__(
        self,
        name: str,
        ruleset_json: str,
        *,
        kind: str,
        sentinel: str,
        fact_types: Mapping[str, type],
        max_activations: int,
        pool_size: int = 8,
    ):
        self.name = name
        self._kind = kind
        self._sentinel = sentinel
        self._fact_types = dict(fact_types)
        self._floats = tuple(key for key, wanted in fact_types.items() if wanted is float)
        self._max_activations = max_activations
        self._pool_size = pool_size
        self._free: queue.SimpleQueue[str] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_pool = 0
        self._created = 0
        self._tails: dict[str, str] = {}  # state id -> what closes its facts' JSON
        try:
            self._handle = _dre.create_ruleset(name, ruleset_json)
        except Exception as exc:  # the C extension raises bare errors with terse messages
            raise EngineFailure(f"rule network rejected ruleset `{name}`: {_describe(exc)}") from exc

    @property
    def states_created(self) -> int:
        return self._created

    def fire(self, fact: Mapping[str, Any]) -> tuple[str, ...]:
        """Assert `fact`, collect every rule that fired in firing order, retract it again."""
        self._check_types(fact)
        sid = self._acquire()
        poisoned = True
        try:
            fired = self._fire(sid, fact)
            poisoned = False
            return fired
        finally:
            self._release(sid, poisoned)

    def _fire(self, sid: str, fact: Mapping[str, Any]) -> tuple[str, ...]:
        # the fact's JSON, its closing brace replaced by the state id, the fact id and the kind
        # (never in a fact: _check_types). A state holds one fact at a time, so one id serves,
        # and the engine need not hash the whole fact to make one.
        text, tail = _encode(fact, self._floats), self._tails[sid]
        message = text[:-1] + tail if len(text) > 2 else "{" + tail[1:]
        handle = self._handle
        try:
            rc, offset = _dre.assert_fact(handle, message)
        except Exception as exc:
            raise EngineFailure(f"rule network failed to assert the fact: {_describe(exc)}") from exc
        if rc != 0:
            self._retract(handle, message, rc_was=rc)
            meaning = {1: "the fact matched no rule", 2: "the fact was already present in its state"}.get(rc, "unknown")
            raise EngineFailure(f"rule network answered rc={rc} ({meaning})")
        fired: list[str] = []
        activations = 0
        try:
            result = _dre.start_action_for_state(handle, offset)
            action = result[1] if result else None
            while action is not None:
                activations += 1
                if activations > self._max_activations:
                    _dre.abandon_action(handle, offset)
                    raise EngineFailure(f"rule network fired more than {self._max_activations} activations")
                name = action[2 : action.index('"', 2)]
                if name not in fired:  # an OR with two true branches activates a rule twice
                    fired.append(name)
                action = _dre.complete_and_start_action(handle, offset)
        except EngineFailure:
            raise
        except Exception as exc:
            raise EngineFailure(f"rule network failed while firing rules: {_describe(exc)}") from exc
        finally:
            self._retract(handle, message)
        if not fired or fired[-1] != self._sentinel:
            raise EngineFailure("rule network did not complete: the sentinel rule did not fire last")
        return tuple(fired[:-1])

    def _retract(self, handle: int, message: str, rc_was: int | None = None) -> None:
        if rc_was == 1:
            return  # nothing was stored for a fact that matched nothing
        try:
            _dre.retract_fact(handle, message)
        except Exception as exc:
            raise EngineFailure(f"rule network failed to retract the fact: {_describe(exc)}") from exc

    def _check_types(self, fact: Mapping[str, Any]) -> None:
        types = self._fact_types
        for key, value in fact.items():
            if type(value) is not types.get(key):
                self._check_type(key, value)

    def _check_type(self, key: str, value: Any) -> None:
        wanted = self._fact_types.get(key)
        if wanted is None:
            raise EngineFailure(f"fact field `{key}` is not declared to the rule network")
        if not (wanted is float and type(value) is int):
            raise EngineFailure(f"fact field `{key}` is {type(value).__name__}, the rules expect {wanted.__name__}")

    def _acquire(self) -> str:
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._in_pool < self._pool_size:
                if self._created >= MAX_STATES:
                    raise EngineFailure("rule network has used up its state ids; restart the process")
                self._in_pool += 1
                self._created += 1
                sid = f"s{self._created}"
                self._tails[sid] = engine_json({"sid": sid, "id": "f", "_kind": self._kind}).replace("{", ",", 1)
                return sid
        return self._free.get()

    def _release(self, sid: str, poisoned: bool) -> None:
        if not poisoned:
            self._free.put(sid)
            return
        # A state that failed mid-request may hold a lease or a stray fact: never reuse it,
        # never delete it (that can crash the process); a fresh id takes its place.
        with self._lock:
            self._in_pool -= 1


def _describe(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
