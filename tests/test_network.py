"""The rule-network adapter (protection_rules.network.RuleNetwork) on its own, and each trap of
durable-rules that it designs around (docs/durable-rules.md section 2).

Rulesets here are small and hand-made: every rule is guarded by the `_kind` discriminator and
the sentinel `{"pri": 65001, "all": [{"m": {"_kind": "k"}}]}` comes last.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from protection_rules import Engine, EngineFailure
from protection_rules import network as network_module
from protection_rules.network import RuleNetwork

# through the network module: on Python 3.13 it must load a shim before this extension imports
durable_rules_engine = network_module._dre

KIND = "k"
SENTINEL = "__sentinel__"
SENTINEL_RULE = {"pri": 65001, "all": [{"m": {"_kind": KIND}}]}
_names = itertools.count()

START = "2026-03-20T12:00:00Z"


def unique(prefix: str) -> str:
    return f"test:{prefix}:{next(_names)}"


def rule(pri: int, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"pri": pri, "all": [{"m": {"$and": [{"_kind": KIND}, *conditions]}}]}


def make(
    rules: dict[str, Any], *, name: str | None = None, fact_types: dict[str, type] | None = None, **options: Any
) -> RuleNetwork:
    return RuleNetwork(
        name or unique("net"),
        json.dumps(rules),
        kind=KIND,
        sentinel=SENTINEL,
        fact_types=fact_types or {"x": int},
        max_activations=options.pop("max_activations", len(rules) + 4),
        **options,
    )


# Defined deliberately out of salience order; b2 and b1 tie at pri 2 (ties fire in definition order).
THRESHOLDS = {
    "c": rule(3, {"$gt": {"x": 3}}),
    "b2": rule(2, {"$gt": {"x": 2}}),
    "a": rule(1, {"$gt": {"x": 1}}),
    "b1": rule(2, {"$gt": {"x": 0}}),
    "z": rule(0, {"x": 7}),
    SENTINEL: SENTINEL_RULE,
}


def expected_thresholds(x: int) -> tuple[str, ...]:
    """By hand: salience ascending, ties in definition order (b2 before b1)."""
    out = []
    if x == 7:
        out.append("z")
    if x > 1:
        out.append("a")
    if x > 2:
        out.append("b2")
    if x > 0:
        out.append("b1")
    if x > 3:
        out.append("c")
    return tuple(out)


@pytest.fixture(scope="module")
def thresholds() -> RuleNetwork:
    return make(THRESHOLDS)


# --------------------------------------------------------------------------------- (a) facts


@pytest.mark.parametrize(
    ("x", "fired"),
    [
        (0, ()),
        (1, ("b1",)),
        (2, ("a", "b1")),
        (3, ("a", "b2", "b1")),
        (5, ("a", "b2", "b1", "c")),
        (7, ("z", "a", "b2", "b1", "c")),
    ],
)
def test_facts_fire_every_matching_rule_in_salience_order(thresholds: RuleNetwork, x: int, fired: tuple[str, ...]) -> None:
    assert thresholds.fire({"x": x}) == fired
    assert expected_thresholds(x) == fired  # the hand oracle used by the thread test agrees


def test_an_event_fires_only_the_first_rule_which_is_why_the_adapter_asserts_facts() -> None:
    handle = durable_rules_engine.create_ruleset(unique("event"), json.dumps(THRESHOLDS))
    rc, offset = durable_rules_engine.assert_event(handle, json.dumps({"sid": "e1", "_kind": KIND, "x": 7}))
    assert rc == 0
    fired = []
    result = durable_rules_engine.start_action_for_state(handle, offset)
    action = result[1] if result else None
    while action is not None:
        fired.append(next(iter(json.loads(action))))
        action = durable_rules_engine.complete_and_start_action(handle, offset)
    # five rules and the sentinel match x == 7, but the event is consumed by the first one
    assert fired == ["z"]


def test_or_with_two_true_branches_is_reported_once() -> None:
    net = make({"either": rule(1, {"$or": [{"$gt": {"x": 0}}, {"$lt": {"x": 10}}]}), SENTINEL: SENTINEL_RULE})
    assert net.fire({"x": 5}) == ("either",)


# ------------------------------------------------------------------------- (b) no rule matched


def test_fact_matching_no_rule_is_an_engine_failure_not_a_crash() -> None:
    rules = {
        "big": rule(1, {"$gt": {"x": 5}}),
        SENTINEL: {"pri": 65001, "all": [{"m": {"$and": [{"_kind": KIND}, {"$gt": {"need": 0}}]}}]},
    }
    net = make(rules, fact_types={"x": int, "need": int})
    with pytest.raises(EngineFailure, match="matched no rule"):
        net.fire({"x": 1})
    with pytest.raises(EngineFailure):
        net.fire({"x": 9})  # `big` fires but the sentinel cannot: not completed
    # the adapter is still usable afterwards
    assert net.fire({"x": 9, "need": 1}) == ("big",)
    assert net.fire({"x": 1, "need": 1}) == ()


# ----------------------------------------------------------------------- (c) no delete_state


def test_never_calls_delete_state_and_reuses_state_ids(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def forbidden(*args: Any) -> None:
        calls.append(args)
        raise AssertionError("delete_state must never be called (it can segfault)")

    monkeypatch.setattr(network_module._dre, "delete_state", forbidden)
    net = make(THRESHOLDS)
    for i in range(2000):
        x = i % 9
        assert net.fire({"x": x}) == expected_thresholds(x)
    assert calls == []
    assert 1 <= net.states_created <= 8


def test_failures_do_not_call_delete_state_either(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(network_module._dre, "delete_state", lambda *a: pytest.fail("delete_state called"))
    rules = {
        "big": rule(1, {"$gt": {"x": 5}}),
        SENTINEL: {"pri": 65001, "all": [{"m": {"$and": [{"_kind": KIND}, {"$gt": {"need": 0}}]}}]},
    }
    net = make(rules, fact_types={"x": int, "need": int})
    for _ in range(20):
        with pytest.raises(EngineFailure):
            net.fire({"x": 9})
    assert net.fire({"x": 9, "need": 1}) == ("big",)


# -------------------------------------------------------------------------------- (d) threads


def test_threads_get_correct_results_and_share_a_small_pool() -> None:
    net = make(THRESHOLDS)
    threads_n, per_thread = 8, 500
    errors: list[str] = []
    counts = [0] * threads_n
    barrier = threading.Barrier(threads_n)

    def work(index: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            x = (index + i) % 9
            try:
                got = net.fire({"x": x})
            except Exception as exc:  # collected and asserted below
                errors.append(f"thread {index} #{i}: {exc!r}")
                continue
            if got != expected_thresholds(x):
                errors.append(f"thread {index} #{i}: x={x} fired {got}")
            counts[index] += 1

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(threads_n)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(old)
    assert sys.getswitchinterval() == old
    assert errors == []
    assert counts == [per_thread] * threads_n
    assert 1 <= net.states_created <= 8


def test_engine_threads_decide_consistently() -> None:
    engine = Engine.from_policy(audit=None)
    requests = [
        (
            {"asset": "T", "action": "close", "current_date": START, "position_entry_date": "2026-03-19T12:00:00Z"},
            ("holding_period",),
        ),
        ({"asset": "T", "action": "open", "current_date": START}, ()),
        ({"asset": "T", "action": "close", "current_date": START, "current_score": 0.1}, ("grace_period",)),
        (
            {
                "asset": "T",
                "action": "open",
                "current_date": START,
                "state": {"events": [{"type": "open", "at": "2026-03-10"}, {"type": "close", "at": "2026-03-12"}]},
            },
            ("whipsaw_protection",),
        ),
    ]
    errors: list[str] = []

    def work(index: int) -> None:
        for i in range(100):
            request, blocking = requests[(index + i) % len(requests)]
            decision = engine.evaluate(request)
            if decision.blocking_systems != blocking:
                errors.append(f"{request['action']}: {decision.blocking_systems} ({decision.reason})")

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        workers = [threading.Thread(target=work, args=(n,)) for n in range(4)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    finally:
        sys.setswitchinterval(old)
    assert errors == []
    assert engine._network.states_created <= 8


# ------------------------------------------------------------------------- (e) same names


def test_two_networks_with_the_same_ruleset_name_coexist() -> None:
    name = unique("same")
    first = make(THRESHOLDS, name=name)
    second = make({"only": rule(1, {"$lt": {"x": 2}}), SENTINEL: SENTINEL_RULE}, name=name)
    for x in range(9):
        assert first.fire({"x": x}) == expected_thresholds(x)
        assert second.fire({"x": x}) == (("only",) if x < 2 else ())


def test_two_engines_from_the_same_policy_both_work() -> None:
    one, two = Engine.from_policy(audit=None), Engine.from_policy(audit=None)
    assert one.compiled.ruleset_name == two.compiled.ruleset_name
    assert one._network is not two._network
    request = {"asset": "T", "action": "close", "current_date": START, "position_entry_date": "2026-03-19T12:00:00Z"}
    for _ in range(3):
        for engine in (one, two):
            decision = engine.evaluate(request)
            assert decision.blocking_systems == ("holding_period",), decision.reason


# ---------------------------------------------------------------------- (f) typed facts


class _Spy:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        raise AssertionError("the fact reached the engine")


@pytest.mark.parametrize(
    ("fact", "message"),
    [
        ({"x": "5"}, "str"),  # "5" > 3 is coerced, wrongly, by the C engine
        ({"x": 5.0}, "float"),
        ({"x": True}, "bool"),  # True == 1 in the C engine
        ({"x": None}, "NoneType"),
        ({"x": 5, "y": 1}, "not declared"),
        ({"x": 5, "sid": "s999"}, "not declared"),
        ({"x": 5, "_kind": "other"}, "not declared"),
    ],
)
def test_badly_typed_or_undeclared_facts_never_reach_the_engine(
    monkeypatch: pytest.MonkeyPatch, fact: dict[str, Any], message: str
) -> None:
    net = make(THRESHOLDS)
    spy = _Spy()
    monkeypatch.setattr(network_module._dre, "assert_fact", spy)
    with pytest.raises(EngineFailure, match=message):
        net.fire(fact)
    assert spy.calls == 0


def test_each_fact_carries_its_id_and_retracts_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    # With an `id` the engine does not hash every property of the fact to make one (a third of
    # assert's cost); one id per state is enough, since a state holds one fact at a time.
    net = make(THRESHOLDS)
    asserted: list[str] = []
    real = network_module._dre.assert_fact

    def spy(handle: int, message: str) -> Any:
        asserted.append(message)
        return real(handle, message)

    monkeypatch.setattr(network_module._dre, "assert_fact", spy)
    for x in (3, 5, 3):  # different facts one after the other in the same state, each retracted
        assert net.fire({"x": x}) == expected_thresholds(x)
    assert [json.loads(message)["id"] for message in asserted] == ["f", "f", "f"]


def test_int_is_accepted_for_a_float_field() -> None:
    net = make({"hi": rule(1, {"$gte": {"s": 0.5}}), SENTINEL: SENTINEL_RULE}, fact_types={"s": float})
    assert net.fire({"s": 1}) == ("hi",)
    assert net.fire({"s": 0.25}) == ()


@pytest.mark.parametrize(
    ("value", "fired"),
    [(0.25, ("lo",)), (1e-05, ("lo",)), (-1e-07, ("lo",)), (1.5e-07, ("lo",)), (1e16, ()), (1e300, ()), (0.75, ())],
)
def test_floats_in_exponent_form_reach_the_engine_intact(value: float, fired: tuple[str, ...]) -> None:
    """durable-rules' JSON parser rejects `1e-05` (an exponent without a fraction: error 204):
    Python's json spells small and large floats that way, so the adapter must not."""
    net = make({"lo": rule(1, {"$lt": {"s": 0.6}}), SENTINEL: SENTINEL_RULE}, fact_types={"s": float})
    assert net.fire({"s": value}) == fired


# ---------------------------------------------------------------------- (g) no threads


def test_no_background_threads() -> None:
    before = threading.active_count()
    engines = [Engine.from_policy(audit=None) for _ in range(3)]
    net = make(THRESHOLDS)
    for engine in engines:
        engine.evaluate({"asset": "T", "action": "open", "current_date": START})
    net.fire({"x": 3})
    assert threading.active_count() == before


# ------------------------------------------------------------------------ (h) sentinel


def test_missing_sentinel_is_an_engine_failure() -> None:
    net = make({"a": rule(1, {"$gt": {"x": 0}}), "b": rule(2, {"$gt": {"x": -10}})})
    with pytest.raises(EngineFailure, match="sentinel"):
        net.fire({"x": 3})


def test_sentinel_not_last_is_an_engine_failure() -> None:
    # a rule with a salience number above the sentinel's fires after it
    net = make({"late": rule(65002, {"$gt": {"x": 0}}), SENTINEL: SENTINEL_RULE})
    assert net.fire({"x": 0}) == ()
    with pytest.raises(EngineFailure, match="sentinel"):
        net.fire({"x": 1})


def test_too_many_activations_is_an_engine_failure() -> None:
    net = make(THRESHOLDS, max_activations=3)
    assert net.fire({"x": 1}) == ("b1",)  # 2 activations with the sentinel
    with pytest.raises(EngineFailure, match="activations"):
        net.fire({"x": 7})
    assert net.fire({"x": 2}) == ("a", "b1")  # still usable after the abandoned run


def test_a_rejected_ruleset_is_an_engine_failure() -> None:
    with pytest.raises(EngineFailure, match="rejected"):
        RuleNetwork(unique("bad"), '{"r": {"alll": []}}', kind=KIND, sentinel=SENTINEL, fact_types={"x": int}, max_activations=2)


def test_engine_errors_mid_run_are_engine_failures(monkeypatch: pytest.MonkeyPatch) -> None:
    net = make(THRESHOLDS)

    def broken(*args: Any) -> Any:
        raise durable_rules_engine.error("Could not complete action, error code: 307")

    monkeypatch.setattr(network_module._dre, "complete_and_start_action", broken)
    with pytest.raises(EngineFailure, match="307"):
        net.fire({"x": 5})
    monkeypatch.undo()
    assert net.fire({"x": 5}) == expected_thresholds(5)


# ------------------------------------------------------ (i) disagreement and errors: deny


OPEN = {"asset": "T", "action": "open", "current_date": START}  # approved when nothing is broken


@pytest.fixture()
def engine() -> Iterator[Engine]:
    with Engine.from_policy() as engine:
        assert engine.evaluate(OPEN).approved
        yield engine


def _assert_error_deny(decision: Any, *words: str) -> None:
    assert decision.approved is False
    assert "error" in decision.blocking_systems
    assert decision.override_applied is False
    for word in words:
        assert word in decision.reason, decision.reason


def test_engine_mirror_disagreement_denies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine._network, "fire", lambda fact: ("whipsaw_protection.block",))
    _assert_error_deny(engine.evaluate(OPEN), "Engine error")


def test_engine_missing_a_rule_denies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # the mirror expects holding_period.block; the network "forgets" it
    monkeypatch.setattr(engine._network, "fire", lambda fact: ())
    request = {"asset": "T", "action": "close", "current_date": START, "position_entry_date": "2026-03-19T12:00:00Z"}
    _assert_error_deny(engine.evaluate(request), "Engine error")


def test_engine_failure_denies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(fact: Any) -> Any:
        raise EngineFailure("rule network answered rc=2")

    monkeypatch.setattr(engine._network, "fire", fail)
    _assert_error_deny(engine.evaluate(OPEN), "rc=2")


def test_unexpected_exception_in_a_protection_denies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    holding = engine.compiled.policy.protections["holding_period"]

    def boom(ctx: Any) -> Any:
        return 1 / 0

    monkeypatch.setattr(holding, "facts", boom)
    _assert_error_deny(engine.evaluate(OPEN), "ZeroDivisionError")


def test_unexpected_exception_while_explaining_denies(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    whipsaw = engine.compiled.policy.protections["whipsaw_protection"]

    def boom(*args: Any) -> Any:
        raise KeyError("cycles")

    monkeypatch.setattr(whipsaw, "explain", boom)
    _assert_error_deny(engine.evaluate(OPEN), "KeyError")


def test_refuses_a_new_state_id_past_the_limit(monkeypatch):
    # the C engine poisons a ruleset at its 1025th live state id; the driver stops well before
    monkeypatch.setattr(network_module, "MAX_STATES", 3)
    net = make(dict(THRESHOLDS), pool_size=8)
    held = [net._acquire() for _ in range(3)]  # three ids in use at once, none returned
    assert held == ["s1", "s2", "s3"]
    with pytest.raises(EngineFailure, match="used up its state ids"):
        net._acquire()


# ----------------------------------------------------------- (j) Python 3.13: PyEval_CallObject

NEEDS_SHIM = sys.version_info >= (3, 13)


def test_pyeval_callobject_is_provided_only_from_python_3_13() -> None:
    assert (network_module.PYEVAL_SHIM in sys.modules) is NEEDS_SHIM
    # in the process's global symbol scope, where durable_rules_engine's reference resolves
    assert hasattr(ctypes.CDLL(None), "PyEval_CallObject") is NEEDS_SHIM


def _shim_pyeval_callobject() -> Any:
    function = ctypes.PyDLL(sys.modules[network_module.PYEVAL_SHIM].__file__).PyEval_CallObject
    function.restype = ctypes.py_object
    function.argtypes = (ctypes.py_object, ctypes.py_object)
    return function


def _arguments(*args: Any, **kwargs: Any) -> Any:
    return args, kwargs


def _raises(*args: Any) -> Any:
    raise ValueError("raised by the callable")


@pytest.mark.skipif(not NEEDS_SHIM, reason="the shim is built and loaded on Python 3.13 and later only")
@pytest.mark.parametrize(
    ("function", "args", "outcome"),
    [
        (_arguments, (1, "a"), ((1, "a"), {})),  # the tuple's items are the positional arguments
        (_arguments, ctypes.py_object(), ((), {})),  # NULL: no arguments
        (_arguments, [1, "a"], TypeError("argument list must be a tuple")),
        (_arguments, None, TypeError("argument list must be a tuple")),  # Py_None is not NULL
        (_raises, (), ValueError("raised by the callable")),
    ],
    ids=["tuple", "null", "list", "none", "raises"],
)
def test_the_shim_calls_like_pyeval_callobject_did(function: Any, args: Any, outcome: Any) -> None:
    call = _shim_pyeval_callobject()
    if isinstance(outcome, Exception):
        with pytest.raises(type(outcome), match=f"^{outcome}$"):
            call(function, args)
    else:
        assert call(function, args) == outcome


def test_never_registers_a_storage_callback(monkeypatch: pytest.MonkeyPatch) -> None:
    # The only callers of PyEval_CallObject; built on 3.13 they truncate the returned pointer.
    def forbidden(*args: Any) -> None:
        raise AssertionError("storage callbacks must never be registered")

    for name in dir(durable_rules_engine):
        if name.startswith("set_") and name.endswith("_callback"):
            monkeypatch.setattr(durable_rules_engine, name, forbidden)
    with Engine.from_policy(audit=None) as engine:
        assert engine.evaluate(OPEN).approved
    assert make(THRESHOLDS).fire({"x": 3}) == expected_thresholds(3)


def test_the_advice_names_the_pinned_durable_rules() -> None:
    pyproject = (Path(__file__).resolve().parent.parent / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"{network_module.DURABLE_RULES}"' in pyproject


@pytest.mark.parametrize(
    ("version", "missing", "message"),
    [
        (
            (3, 12),
            "durable_rules_engine",
            "durable-rules' C extension `durable_rules_engine` does not import on python 3.12: "
            "import of durable_rules_engine halted; None in sys.modules: rebuild it with this interpreter "
            "(`pip install --force-reinstall --no-cache-dir durable-rules==2.0.28`; "
            "it compiles with gcc, see the README's installing section for gcc 14 and newer)",
        ),
        (
            (3, 13),
            "_protection_rules_pyeval_shim",
            "`_protection_rules_pyeval_shim`, which durable-rules needs on python 3.13, does not import: "
            "import of _protection_rules_pyeval_shim halted; None in sys.modules: "
            "reinstall protection-rules with this interpreter (`pip install --force-reinstall .`) so that the shim is built",
        ),
    ],
    ids=["engine", "shim"],
)
def test_an_extension_that_does_not_import_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch, version: tuple[int, int], missing: str, message: str
) -> None:
    flags = sys.getdlopenflags()
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` raise ImportError
    with pytest.raises(ImportError) as caught:
        network_module._import_engine(version)
    assert str(caught.value) == message
    assert sys.getdlopenflags() == flags
