"""Parameters are validated before anything runs: identifier names, JSON values, declared."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from exportnb.core.errors import InvalidInput
from exportnb.run import parameters
from exportnb.run.parameters import Declared, check_name, check_value, parse_value, validate

NOTEBOOKS = Path(__file__).parent / "notebooks"
KNOWN = {
    "window_minutes": Declared("window_minutes", "10"),
    "threshold": Declared("threshold", "0.02"),
    "job_ids": Declared("job_ids", "[]"),
    "alert": Declared("alert", "{}"),
    "message": Declared("message", '"hello"'),
    "enabled": Declared("enabled", "False"),
    "anything": Declared("anything", "None"),
    "computed": Declared("computed", 'os.environ.get("X", "")'),
}


@pytest.mark.parametrize(
    "name, why",
    [
        ("__import__('os')", "identifier"),
        ("a;b", "identifier"),
        ("a b", "identifier"),
        ("", "identifier"),
        ("1x", "identifier"),
        ("class", "keyword"),
        ("match", "keyword"),
        ("__class__", "reserved"),
        ("__init__", "reserved"),
        ("nаme", "identifier"),  # Cyrillic а
        (3, "identifier"),
    ],
)
def test_hostile_names(name, why):
    with pytest.raises(InvalidInput, match=why):
        check_name(name)


@pytest.mark.parametrize(
    "value, why",
    [
        (float("nan"), "not a JSON number"),
        (float("inf"), "not a JSON number"),
        (float("-inf"), "not a JSON number"),
        ({1, 2}, "set is not a JSON value"),
        (b"x", "bytes is not a JSON value"),
        ((1, 2), "tuple"),
        (object(), "object"),
        ({1: "a"}, "key 1 is not a string"),
        ([[float("nan")]], "not a JSON number"),
        (2**64, "64 bits"),
        (complex(1, 2), "complex"),
    ],
)
def test_values_that_are_not_json(value, why):
    with pytest.raises(InvalidInput, match=why):
        check_value("p", value)


def test_json_values_pass():
    for value in (
        None,
        True,
        0,
        -(2**63),
        1.5,
        "",
        "__import__('os').system('id')",
        [],
        {"a": [1, {"b": None}]},
    ):
        check_value("p", value)


def test_depth_and_size_are_bounded(monkeypatch):
    deep: list = []
    for _ in range(parameters.MAX_DEPTH + 1):
        deep = [deep]
    with pytest.raises(InvalidInput, match="nested deeper"):
        check_value("p", deep)
    with pytest.raises(InvalidInput, match="bytes of JSON"):
        validate({"message": "x" * parameters.MAX_BYTES}, KNOWN)


def test_unknown_names_list_the_known_ones():
    with pytest.raises(InvalidInput) as caught:
        validate({"windw_minutes": 5}, KNOWN)
    assert "unknown parameter 'windw_minutes'" in caught.value.message
    assert "known parameters: alert, anything, computed, enabled" in caught.value.message
    with pytest.raises(InvalidInput, match="no parameters cell"):
        validate({"a": 1}, {})


@pytest.mark.parametrize(
    "name, value, ok",
    [
        ("window_minutes", 5, True),
        ("window_minutes", 2.5, True),
        ("window_minutes", "5", False),
        ("window_minutes", True, False),
        ("threshold", 1, True),
        ("job_ids", ["a"], True),
        ("job_ids", "a", False),
        ("alert", {"a": 1}, True),
        ("alert", [1], False),
        ("message", "x", True),
        ("message", 1, False),
        ("enabled", True, True),
        ("enabled", 1, False),
        ("anything", [1, "x"], True),
        ("computed", 7, True),
    ],
)
def test_values_fit_the_declared_default(name, value, ok):
    if ok:
        assert validate({name: value}, KNOWN) == {name: value}
    else:
        with pytest.raises(InvalidInput, match=f"parameter {name} takes"):
            validate({name: value}, KNOWN)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("10", 10),
        ("0.5", 0.5),
        ("true", True),
        ("null", None),
        ('["a", "b"]', ["a", "b"]),
        ('{"k": 1}', {"k": 1}),
        ("job-1", "job-1"),
        ("[not json", "[not json"),
        ("__import__('os')", "__import__('os')"),
        ('"quoted"', "quoted"),
    ],
)
def test_command_line_values_are_json_when_they_parse(raw, expected):
    assert parse_value("p", raw, KNOWN["anything"]) == expected


@pytest.mark.parametrize("raw", ["True", "False", "None", "NaN", "Infinity", "-Infinity"])
def test_python_spellings_and_non_finite_numbers_are_refused(raw):
    with pytest.raises(InvalidInput, match=f"-p p {raw}"):
        parse_value("p", raw)


def test_string_parameters_take_the_value_as_it_is():
    assert parse_value("message", "007", KNOWN["message"]) == "007"
    assert parse_value("message", "None", KNOWN["message"]) == "None"


def test_assignments_given_twice_are_refused():
    with pytest.raises(InvalidInput, match="given twice"):
        parameters.parse_assignments([("message", "a"), ("message", "b")], KNOWN)


def test_declared_parameters_of_a_notebook():
    found = parameters.declared(NOTEBOOKS / "succeeds.ipynb")
    assert list(found) == [
        "incident_id",
        "job_ids",
        "alert",
        "window_minutes",
        "failure_threshold",
        "message",
        "operator",
    ]
    assert found["window_minutes"].literal == (True, 10)
    with pytest.raises(InvalidInput, match="does not exist"):
        parameters.declared(NOTEBOOKS / "missing.ipynb")


def test_declared_parameters_of_something_that_is_not_a_notebook(tmp_path):
    bogus = tmp_path / "bogus.ipynb"
    bogus.write_text("{not a notebook")
    with pytest.raises(InvalidInput, match="cannot read the parameters"):
        parameters.declared(bogus)


def test_alert_files(tmp_path):
    alert = tmp_path / "alert.json"
    payload = {"status": "firing", "alerts": [{"labels": {"alertname": "ExportFailureRate"}}]}
    alert.write_text(json.dumps(payload))
    assert parameters.read_alert(alert) == payload
    for text, message in [
        ("{x", "is not JSON"),
        ("[1, 2]", "must hold a JSON object"),
        ('{"v": NaN}', "is not JSON"),
        ("\xff", "is not JSON"),
    ]:
        alert.write_text(text)
        with pytest.raises(InvalidInput, match=message) as caught:
            parameters.read_alert(alert)
        assert caught.value.message.startswith(f"alert file {alert}")
    with pytest.raises(InvalidInput, match="cannot read alert file"):
        parameters.read_alert(tmp_path / "missing.json")
