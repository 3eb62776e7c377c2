"""Any text in any numeric setting loads as a finite value within its bounds, or is refused
with a SettingsError that names the variable: never a crash, never a value a process then
misuses (``nan`` passed every minimum, and a replay window of ``nan`` kept its history forever)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.settings import SettingsError, load, settings_classes

NUMERIC = [
    (cls, f)
    for cls in settings_classes()
    for f in dataclasses.fields(cls)
    if str(f.type) in ("int", "float") and not f.metadata["secret"]
]
TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["nan", "NaN", "inf", "-inf", "Infinity", "1e999", "-0", " 5 ", "0x10"]),
    st.floats().map(repr),
    st.integers().map(str),
)


@pytest.mark.parametrize(("cls", "f"), NUMERIC, ids=[f.metadata["env"] for _, f in NUMERIC])
@given(raw=TEXT)
@settings(max_examples=60, deadline=None)
def test_a_numeric_setting_is_finite_and_in_range_or_refused_by_name(
    cls: type[Any], f: dataclasses.Field[Any], raw: str
) -> None:
    name = f.metadata["env"]
    try:
        value = getattr(load(cls, {name: raw}), f.name)
    except SettingsError as exc:
        assert name in str(exc)
        return
    assert math.isfinite(value)
    minimum = f.metadata["minimum"]
    assert minimum is None or value >= minimum
