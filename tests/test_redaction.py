"""Redaction: every kind of secret, in every place a record keeps text, before it is written."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import nbformat
import pytest

from exportnb.core.errors import ConfigError
from exportnb.core.findings import RESULT_MIMETYPE
from exportnb.record.redaction import (
    Redactor,
    is_secret_name,
    redactor,
    secret_names,
    secret_values,
)
from exportnb.run import runner

NOTEBOOKS = Path(__file__).parent / "notebooks"
ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
BASIC = base64.b64encode(b"exporter:pa55w0rd-basic").decode()


@pytest.mark.parametrize(
    "text, secret, kind",
    [
        (f"key {ACCESS_KEY} here", ACCESS_KEY, "aws-access-key"),
        ("temporary ASIAY34FZKBOKMUTVV7A used", "ASIAY34FZKBOKMUTVV7A", "aws-access-key"),
        (f"aws_secret_access_key = {SECRET_KEY}", SECRET_KEY, "aws-secret-key"),
        (f'{{"SecretAccessKey": "{SECRET_KEY}"}}', SECRET_KEY, "aws-secret-key"),
        (f"Credentials(secret_key='{SECRET_KEY}')", SECRET_KEY, "aws-secret-key"),
        (f"&quot;secret&quot;: &quot;{SECRET_KEY}&quot;", SECRET_KEY, "aws-secret-key"),
        ("got Bearer eyJhbGciOi.J9-x_y from idp", "eyJhbGciOi.J9-x_y", "bearer-token"),
        (f"sent Basic {BASIC} once", BASIC, "basic-auth"),
        ("Authorization: Token abc123def", "Token abc123def", "authorization"),
        ("{'Authorization': 'Bearer xyz987'}", "xyz987", "authorization"),
        ("<td>Proxy-Authorization: Negotiate YIIabc</td>", "YIIabc", "authorization"),
        ("postgres://admin:hunter2x@db:5432/x", "hunter2x", "url-password"),
        ("https://:tok3n@git.example.com/r.git", "tok3n", "url-password"),
    ],
)
def test_each_kind_of_secret_is_found(text, secret, kind):
    redact = Redactor()
    once = redact.text(text)
    assert secret not in once and f"[REDACTED:{kind}]" in once
    assert redact.text(once) == once  # idempotent


@pytest.mark.parametrize(
    "text",
    [
        "Basic checks passed for all buckets",
        "AuthorizationHeaderMalformed: the header is malformed",
        "Authorization failed for tenant acme",
        "https://example.com:8443/path@v2",
        "the secret of success is 40 characters long, really",
        "AKIA is a prefix; AKIASHORT is not a key",
    ],
)
def test_ordinary_text_is_left_alone(text):
    assert Redactor().text(text) == text


def test_code_is_not_mangled():
    source = 'headers = {"Authorization": f"Bearer {token}"}\nurl = f"https://{user}:{pw}@host"'
    assert Redactor().text(source, code=True) == source


def test_known_secret_values_in_every_spelling():
    redact = Redactor({"env:DB_PASSWORD": 'p<a"ss&word'})
    for spelling in ('p<a"ss&word', "p&lt;a&quot;ss&amp;word", 'p<a\\"ss&word'):
        assert redact.text(f"x {spelling} y") == "x [REDACTED:env:DB_PASSWORD] y"
    assert Redactor({"env:SHORT": "abc"}).text("abc abcd") == "abc abcd"


def test_secret_names_and_values(tmp_path):
    assert [
        is_secret_name(n)
        for n in (
            "api_token",
            "db_password",
            "aws_secret",
            "ssh_key",
            "keys",
            "KEY_ID",
            "credentials",
            "keyboard",
            "buckets",
            "monkeys_count",
        )
    ] == [True, True, True, True, True, True, True, False, False, False]
    found = secret_values(
        {"api_token": "tok-123456", "names": ["x"], "pair_key": [1234567]},
        env={"DB_PW": "pw-1234567", "AWS_SECRET_ACCESS_KEY": "sk-9876543", "OTHER": "visible"},
        names=["DB_PW"],
    )
    assert found == {
        "env:AWS_SECRET_ACCESS_KEY": "sk-9876543",
        "env:DB_PW": "pw-1234567",
        "parameter:api_token": "tok-123456",
        "parameter:pair_key": "1234567",
    }


def test_secret_names_come_from_the_config(tmp_path):
    config = tmp_path / "config.toml"
    assert secret_names(config) == ()
    config.write_text('[secrets]\nnames = ["DB_PASSWORD", "SLACK_TOKEN"]\n')
    assert secret_names(config) == ("DB_PASSWORD", "SLACK_TOKEN")
    config.write_text('[secrets]\nnames = "DB_PASSWORD"\n')
    with pytest.raises(ConfigError, match="must be a list"):
        secret_names(config)
    config.write_text("[secrets\n")
    with pytest.raises(ConfigError, match="cannot read"):
        secret_names(config)


def test_parameters_are_redacted_whole_when_their_name_is_secret():
    redact = redactor({"api_token": "ab", "note": f"id {ACCESS_KEY}"}, env={}, names=[])
    safe = redact.parameters({"api_token": "ab", "note": f"id {ACCESS_KEY}", "empty_key": ""})
    assert safe == {
        "api_token": "[REDACTED:parameter:api_token]",
        "note": "id [REDACTED:aws-access-key]",
        "empty_key": "",
    }


def test_json_fields_that_name_secrets():
    redact = Redactor()
    clean = redact.value(
        {
            "SecretAccessKey": "short-but-secret",
            "aws_session_token": "x",
            "Token": "",
            "token_bucket": "kept",
            "nested": {"password": "pw"},
        }
    )
    assert clean == {
        "SecretAccessKey": "[REDACTED:field:SecretAccessKey]",
        "aws_session_token": "[REDACTED:field:aws_session_token]",
        "Token": "",
        "token_bucket": "kept",
        "nested": {"password": "[REDACTED:field:password]"},
    }
    assert redact.value(clean) == clean


def test_a_notebook_walk_covers_outputs_and_metadata_but_not_images():
    image = base64.b64encode(b"AKIAIOSFODNN7EXAMPLE" * 3).decode()
    nb = nbformat.v4.new_notebook(metadata={"papermill": {"parameters": {"k": ACCESS_KEY}}})
    cell = nbformat.v4.new_code_cell(f"print('{ACCESS_KEY}')")
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=ACCESS_KEY),
        nbformat.v4.new_output(
            "display_data",
            data={
                "text/html": f"<b>{ACCESS_KEY}</b>",
                "text/markdown": ACCESS_KEY,
                "application/json": {"nested": [ACCESS_KEY]},
                "image/png": image,
                RESULT_MIMETYPE: {"step": "x", "result": {"evidence": {"k": ACCESS_KEY}}},
            },
        ),
        nbformat.v4.new_output("error", ename="E", evalue=ACCESS_KEY, traceback=[ACCESS_KEY]),
    ]
    nb.cells.append(cell)
    clean = Redactor().notebook(nb)
    text = json.dumps(clean)
    assert ACCESS_KEY not in text.replace(image, "")
    assert clean.cells[0].outputs[1].data["image/png"] == image
    nbformat.validate(clean)


def test_no_secret_reaches_the_archive(tmp_path, monkeypatch):
    """Each kind, through parameters, environment, stdout, HTML, Markdown, JSON, the result
    mimetype, an execute result and a traceback: nowhere in the archived files."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.toml").write_text('[secrets]\nnames = ["EXPORTNB_TEST_DB_PASSWORD"]\n')
    monkeypatch.setenv("EXPORTNB_HOME", str(home))
    monkeypatch.setenv("EXPORTNB_TEST_DB_PASSWORD", "env-pw-31337")
    monkeypatch.setenv("EXPORTNB_TEST_AWS_ID", ACCESS_KEY)
    monkeypatch.setenv("EXPORTNB_TEST_AWS_PAIR", SECRET_KEY)
    given = {
        "api_token": "tok-abcdef-123456",
        "db_url": "postgres://admin:hunter2hunter2@db.internal:5432/x",
        "header": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig",
        "basic": f"Basic {BASIC}",
    }
    record = runner.run(NOTEBOOKS / "prints_secrets.ipynb", parameters=given)
    assert record.status == "failed" and record.error is not None
    assert "[REDACTED:url-password]" in record.error.evalue
    secrets = [
        "tok-abcdef-123456",
        "hunter2hunter2",
        "eyJhbGciOiJIUzI1NiJ9",
        BASIC,
        ACCESS_KEY,
        SECRET_KEY,
        "env-pw-31337",
    ]
    files = {p.name: p.read_bytes() for p in Path(record.location).iterdir()}
    for name, data in files.items():
        for secret in secrets:
            assert secret.encode() not in data, (secret, name)
    assert set(record.redactions) >= {
        "parameter:api_token",
        "url-password",
        "authorization",
        "basic-auth",
        "aws-access-key",
        "aws-secret-key",
        "field",
        "env:EXPORTNB_TEST_DB_PASSWORD",
    }
    nb = nbformat.reads(files["notebook.ipynb"].decode(), as_version=4)
    injected = next(c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", []))
    assert 'api_token = "[REDACTED:parameter:api_token]"' in injected.source
    assert nb.metadata.papermill.parameters["api_token"] == "[REDACTED:parameter:api_token]"
    assert "[REDACTED:env:EXPORTNB_TEST_DB_PASSWORD]" in json.dumps(record.results)
