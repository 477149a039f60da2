"""Tests for :mod:`fuzz.units`: durations and sizes as users write them."""

from __future__ import annotations

import math

import pytest

from fuzz.units import format_bytes, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("10m", 600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
        ("2d", 172800.0),
        ("1.5h", 5400.0),
        ("1m500ms", 60.5),
        ("45", 45.0),
        ("2.5", 2.5),
        ("  10m  ", 600.0),
        ("0s", 0.0),
        (90, 90.0),
        (1.5, 1.5),
        (0, 0.0),
    ],
)
def test_parse_duration_accepts(text: str | int | float, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "   ", "10x", "m", "1h 30m", "-5s", "-5", "10M", "1.s", "1mm", "h1", "1e3"]
)
def test_parse_duration_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_duration(text)
    assert str(info.value) == f"invalid duration {text!r}: use e.g. 30s, 10m, 1h30m"


def test_parse_duration_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match=r"^invalid duration -1: must not be negative$"):
        parse_duration(-1)


@pytest.mark.parametrize("value", [True, False])
def test_parse_duration_rejects_booleans(value: bool) -> None:
    with pytest.raises(ValueError, match=r"use e\.g\. 30s"):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_parse_duration_rejects_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError, match="must be a finite number"):
        parse_duration(value)


def test_parse_duration_rejects_overflowing_text() -> None:
    with pytest.raises(ValueError, match=r"too large$"):
        parse_duration("9" * 400 + "s")


def test_parse_duration_rejects_other_types() -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("0", 0),
        ("512", 512),
        ("7b", 7),
        ("3k", 3000),
        ("3KB", 3000),
        ("3Ki", 3072),
        ("3KiB", 3072),
        ("512MiB", 512 * 1024**2),
        ("12GB", 12 * 1000**3),
        ("12 gib", 12 * 1024**3),
        ("1.5G", 1_500_000_000),
        ("2T", 2 * 1000**4),
        ("1PiB", 1024**5),
        (" 4 MB ", 4_000_000),
        (4096, 4096),
        (4096.0, 4096),
    ],
)
def test_parse_size_accepts(text: str | int | float, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("text", "size"),
    [("8.2MB", 8_200_000), ("1.15KB", 1150), ("4.35MB", 4_350_000), ("0.57KiB", 583)],
)
def test_parse_size_fractions_are_exact(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    "text", ["", "GB", "B", "-1GB", "5ib", "5i", "12 XB", "1.2.3G", "12GBs", "1e3"]
)
def test_parse_size_rejects_bad_text(text: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_size(text)
    assert str(info.value) == f"invalid size {text!r}: use e.g. 512MiB, 12GB"


def test_parse_size_rejects_negative_numbers() -> None:
    with pytest.raises(ValueError, match=r"^invalid size -1: must not be negative$"):
        parse_size(-1)


@pytest.mark.parametrize("value", [2.5, math.inf, math.nan])
def test_parse_size_rejects_fractional_floats(value: float) -> None:
    with pytest.raises(ValueError, match="must be a whole number of bytes"):
        parse_size(value)


@pytest.mark.parametrize("value", [True, None, [1]])
def test_parse_size_rejects_other_types(value: object) -> None:
    with pytest.raises(ValueError, match="invalid size"):
        parse_size(value)  # type: ignore[arg-type]


def test_format_bytes() -> None:
    assert [format_bytes(n) for n in (0, 1023, 1024, 1536 * 1024**2, 3 * 1024**5)] == [
        "0 B", "1023 B", "1.0 KiB", "1.5 GiB", "3.0 PiB"
    ]
