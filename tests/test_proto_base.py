"""The event base record: every event class gets the fast slot-filling ``__init__`` and keeps the
dataclass's signature, defaults, equality and frozenness."""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any

import pytest

from cranewatch import protocols
from cranewatch.protocols.base import Event, FlowContext


def _event_classes() -> list[type[Event]]:
    protocols.load_all()
    found: dict[str, type[Event]] = {}
    todo: list[type] = [Event]
    while todo:
        cls = todo.pop()
        todo.extend(cls.__subclasses__())
        # ``slots=True`` leaves the first, discarded class behind: keep the module's own.
        module = inspect.getmodule(cls)
        if cls is not Event and getattr(module, cls.__name__, None) is cls:
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[name] for name in sorted(found)]


def _value(annotation: str, name: str) -> Any:
    """A distinct value per field, of roughly its type (the init does not check types)."""
    return f"<{name}>" if "str" in annotation else len(name)


@pytest.mark.parametrize("cls", _event_classes(), ids=lambda c: c.__name__)
def test_every_event_class_has_the_fast_init_with_the_dataclass_signature(cls: type) -> None:
    assert "_set_ts" in cls.__init__.__code__.co_names  # type: ignore[misc]
    fields = dataclasses.fields(cls)
    parameters = inspect.signature(cls).parameters
    assert list(parameters) == [f.name for f in fields if not f.kw_only] + [
        f.name for f in fields if f.kw_only]
    required: dict[str, Any] = {}
    for f in fields:
        p = parameters[f.name]
        assert (p.kind is inspect.Parameter.KEYWORD_ONLY) == f.kw_only
        if f.default is not dataclasses.MISSING:
            assert p.default is f.default
        elif f.default_factory is dataclasses.MISSING:
            assert p.default is inspect.Parameter.empty
            required[f.name] = _value(str(f.type), f.name)
    event = cls(**required)
    for f in fields:
        expected = required[f.name] if f.name in required else (
            f.default if f.default is not dataclasses.MISSING
            else f.default_factory())  # type: ignore[misc]
        assert getattr(event, f.name) == expected, f.name
    assert event == cls(**required)
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.ts = 1.0
    with pytest.raises(TypeError, match="missing"):
        cls()


def test_a_default_factory_gives_each_event_its_own_value() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Tagged(Event):
        tags: list[str] = field(default_factory=list)

    first, second = Tagged(ts=1.0, frame=1, src="a", dst="b"), Tagged(ts=2.0, frame=2, src="a",
                                                                      dst="b")
    assert first.tags == [] and first.tags is not second.tags
    assert "_set_tags" in Tagged.__init__.__code__.co_names
    assert Tagged(ts=1.0, frame=1, src="a", dst="b", tags=["x"]).tags == ["x"]


def test_post_init_and_hand_written_init_are_kept() -> None:
    @dataclass(frozen=True, slots=True, kw_only=True)
    class Checked(Event):
        hoist_load: float

        def __post_init__(self) -> None:
            if self.hoist_load < 0:
                raise ValueError("negative hoist load")

    with pytest.raises(ValueError):
        Checked(ts=1.0, frame=1, src="a", dst="b", hoist_load=-1.0)

    @dataclass(frozen=True, slots=True, kw_only=True)
    class Positional(Event):
        overload_limit: float

        def __init__(self, overload_limit: float) -> None:
            object.__setattr__(self, "overload_limit", overload_limit)
            for name, value in (("ts", 0.0), ("frame", 0), ("src", ""), ("dst", "")):
                object.__setattr__(self, name, value)
            for name in ("sport", "dport"):
                object.__setattr__(self, name, 0)
            object.__setattr__(self, "source", "")

    assert Positional(55.0).overload_limit == 55.0


def test_flow_context_has_the_fast_init_with_positional_fields() -> None:
    assert "_set_client" in FlowContext.__init__.__code__.co_names
    ctx = FlowContext("10.20.7.30", 50123, "10.20.7.10", 502, "tcp")
    assert ctx == FlowContext(client="10.20.7.30", client_port=50123, server="10.20.7.10",
                              server_port=502, transport="tcp", source="")
    assert hash(ctx) == hash(FlowContext("10.20.7.30", 50123, "10.20.7.10", 502, "tcp", ""))
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.server_port = 503  # type: ignore[misc]
