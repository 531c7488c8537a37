import pytest

from exportnb.core.errors import InvalidInput
from exportnb.core.quantities import format_duration, format_size, parse_size, parse_ttl


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("50MB", 50_000_000),
        ("64MiB", 64 * 2**20),
        ("1GB", 10**9),
        ("512", 512),
        ("1.5GB", 1_500_000_000),
        ("50 mb", 50_000_000),
    ],
)
def test_sizes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["50XB", "-1MB", "0MB", "", "MB", "1e3MB", "five"])
def test_bad_sizes_are_refused_with_a_clear_message(text):
    with pytest.raises(InvalidInput, match="invalid size"):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("30m", 1800), ("2h", 7200), ("1h30m", 5400), ("45s", 45), ("500ms", 0.5)],
)
def test_ttls(text, expected):
    assert parse_ttl(text) == expected


@pytest.mark.parametrize("text", ["30x", "0m", "", "m", "30", "-5m", "30m5", "1h 30q"])
def test_bad_ttls_are_refused(text):
    with pytest.raises(InvalidInput, match="TTL"):
        parse_ttl(text)


def test_formatting_round_trips():
    assert format_size(50_000_000) == "50MB"
    assert format_size(64 * 2**20) == "64MiB"
    assert format_duration(5400) == "1h30m"
    assert parse_ttl(format_duration(1800)) == 1800
