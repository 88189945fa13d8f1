"""redact.py: secrets by their form (command lines, code, locals, server text) and by their value."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from urllib.parse import quote

import pytest

from prefect_cancel_doctor.core.inert import TRUNCATED, visible
from prefect_cancel_doctor.core.redact import (
    REDACTED,
    ScrubbedStream,
    forget,
    hold,
    hold_url,
    hold_userinfo,
    redact_argv,
    redact_code,
    redact_local,
    redact_text,
    redact_url_passwords,
    scrub,
    scrub_tree,
)


@pytest.fixture(autouse=True)
def _nothing_held() -> Iterator[None]:
    forget()
    yield
    forget()


# -- by form -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "shown"),
    [
        (("flow", "--api-key", "pnu_k1"), ("flow", "--api-key", REDACTED)),
        (("flow", "--api-key=pnu_k1"), ("flow", f"--api-key={REDACTED}")),
        (("flow", "--client-secret", "s1"), ("flow", "--client-secret", REDACTED)),
        (("sshpass", "-p", "pw1", "ssh", "h"), ("sshpass", "-p", REDACTED, "ssh", "h")),
        (("docker", "login", "-u", "me", "-p", "pw1"), ("docker", "login", "-u", "me", "-p", REDACTED)),
        (("mysql", "-ppw1", "db"), ("mysql", f"-p{REDACTED}", "db")),
        (("redis-cli", "-a", "pw1", "ping"), ("redis-cli", "-a", REDACTED, "ping")),
        (("curl", "-u", "me:pw1", "http://h"), ("curl", "-u", f"me:{REDACTED}", "http://h")),
        (("worker", "redis://:pw1@h:6379/0"), ("worker", f"redis://:{REDACTED}@h:6379/0")),
        (("etl", "postgres://u:p@db/x"), ("etl", f"postgres://u:{REDACTED}@db/x")),
        (("etl", "postgres://u:p@ss@db/x"), ("etl", f"postgres://u:{REDACTED}@db/x")),
        (
            ("curl", "-H", "Authorization: Bearer tok1", "http://h"),
            ("curl", "-H", f"Authorization: Bearer {REDACTED}", "http://h"),
        ),
        (("curl", "-H", "X-Api-Key: k1", "http://h"), ("curl", "-H", f"X-Api-Key: {REDACTED}", "http://h")),
        # as `docker top` splits a command line: at every space
        (
            ("curl", "-H", "Authorization:", "Bearer", "tok1", "http://h"),
            ("curl", "-H", "Authorization:", "Bearer", REDACTED, "http://h"),
        ),
        (
            ("python", "-c", 'import db\ndb.connect(password="pw1", host="h")'),
            ("python", "-c", f'import db\ndb.connect(password="{REDACTED}", host="{REDACTED}")'),
        ),
        # a secret passed by position to a parameter with a secret's name: every literal is hidden
        (
            ("/usr/bin/python3", "-c", 'def connect(password): pass\nconnect("pw1")'),
            ("/usr/bin/python3", "-c", f'def connect(password): pass\nconnect("{REDACTED}")'),
        ),
        (("python", "-c", 'print("ready")'), ("python", "-c", 'print("ready")')),
        (
            ("sh", "-c", "mysql --password pw1 -h db && curl -H 'Authorization: Bearer tok1' h"),
            (
                "sh",
                "-c",
                f"mysql --password {REDACTED} -h db && curl -H 'Authorization: Bearer {REDACTED}' h",
            ),
        ),
        (("env", "DB_PASS=pw1", "PATH=/bin"), ("env", f"DB_PASS={REDACTED}", "PATH=/bin")),
    ],
)
def test_command_lines(argv: tuple[str, ...], shown: tuple[str, ...]) -> None:
    assert redact_argv(argv) == shown


def test_prefect_command_lines_keep_their_pool() -> None:
    # `-p` is `--pool` to Prefect: the doctor reads a worker's pool from it.
    for argv in (
        ("prefect", "worker", "start", "-p", "default", "--name", "w1"),
        ("/venv/bin/python", "-m", "prefect", "worker", "start", "-p", "default"),
        ("python", "-m", "prefect.engine"),
    ):
        assert redact_argv(argv) == argv


def test_code_and_locals() -> None:
    assert redact_code('if password == "pw1":') == f'if password == "{REDACTED}":'
    assert redact_code('token: str = "t1"') == f'token: str = "{REDACTED}"'
    assert redact_code('args = ["--api-key", "k1", "--pool", "p"]') == (
        f'args = ["--api-key", "{REDACTED}", "--pool", "p"]'
    )
    assert redact_code("time.sleep(3600)  # blocks here") == "time.sleep(3600)  # blocks here"
    assert redact_local("headers", "{'Authorization': 'Bearer tok1'}") == f"{{'Authorization': '{REDACTED}'}}"
    assert redact_local("dsn", "'redis://:pw1@h'") == f"'redis://:{REDACTED}@h'"
    assert redact_local("argv", "['--api-key', 'k1']") == f"['--api-key', '{REDACTED}']"
    assert redact_local("api_key", "'k1'") == REDACTED


def test_server_text() -> None:
    echoed = '{"detail": "bad", "headers": {"authorization": "Basic dXNlcjpwdzE="}}'
    assert "dXNlcjpwdzE=" not in redact_text(echoed)
    jwt = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl"
    assert redact_text(f"token {jwt} expired") == f"token {REDACTED} expired"
    assert redact_text("TOKEN=t1 ./run.sh") == f"TOKEN={REDACTED} ./run.sh"
    # the doctor's words stay
    assert redact_text("401 Unauthorized: check the token") == "401 Unauthorized: check the token"
    assert redact_text("Basic authentication failed") == "Basic authentication failed"


def test_a_secret_cut_at_the_length_limit_is_hidden() -> None:
    program = visible(f'{"x" * 1960}; connect(password="pw1-is-long-and-cut-here")')
    assert program.endswith(TRUNCATED) and "pw1" in program
    assert "pw1" not in redact_argv(("python", "-c", program))[2]
    url = visible(f"{'x' * 1965} postgres://etl:pw1-is-long-and-cut-here@db/x")
    assert "pw1" not in redact_text(url)


def test_url_passwords_are_hidden_once() -> None:
    once = redact_url_passwords("http://admin:pw1@h/api")
    assert once == f"http://admin:{REDACTED}@h/api"
    assert redact_url_passwords(once) == once
    assert redact_url_passwords("http://admin@h/api") == "http://admin@h/api"


# -- by value --------------------------------------------------------------------------------------

KEY = "pnu_0123456789abcdefXYZ"


def test_a_held_value_is_hidden_in_every_form() -> None:
    hold(KEY)
    forms = [
        KEY,
        f"Bearer {KEY}",
        base64.b64encode(KEY.encode()).decode(),
        base64.b64encode(f'{{"key": "{KEY}"}}'.encode()).decode(),  # inside a longer base64 text
        base64.urlsafe_b64encode(f"x{KEY}".encode()).decode(),
        quote(KEY, safe=""),
        json.dumps(KEY),
        KEY.replace("_", "\\_"),  # as Markdown escapes it
    ]
    for form in forms:
        shown = scrub(f"the server said: {form}!")
        assert KEY not in shown and form.strip('"') not in shown, (form, shown)
        assert REDACTED in shown


def test_a_basic_header_of_any_user_is_hidden() -> None:
    hold_url("http://admin:pw@prefect.internal/api")  # a short password: not held raw
    header = base64.b64encode(b"admin:pw").decode()
    assert scrub(f"Authorization: Basic {header}") == f"Authorization: Basic {REDACTED}"
    assert scrub("pw is a word") == "pw is a word"
    hold_userinfo("someone", "s3cret-pw")
    other = base64.b64encode(b"another-user:s3cret-pw").decode()
    assert "s3cret" not in scrub(other) and other not in scrub(other)


def test_a_value_cut_short_is_hidden() -> None:
    hold(KEY)
    cut = visible(f"{'x' * 1990}{KEY}")  # cut at 2,000 characters, in the middle of the key
    assert cut.endswith(TRUNCATED)
    assert KEY[:6] not in scrub(cut)
    assert scrub(f"echo: {KEY[:12]}", cut=True) == f"echo: {REDACTED}"
    assert scrub("echo: pn", cut=True) == "echo: pn"  # too short to tell


def test_a_private_key_line_is_hidden() -> None:
    body = base64.b64encode(bytes(range(96))).decode()
    pem = f"-----BEGIN PRIVATE KEY-----\n{body[:64]}\n{body[64:]}\n-----END PRIVATE KEY-----\n"
    hold(pem)
    assert body[:64] not in scrub(f"error near {body[:64]}")
    assert scrub(base64.b64encode(pem.encode()).decode()) == REDACTED


def test_short_values_are_not_held_raw() -> None:
    hold("abc")
    assert scrub("abc abc") == "abc abc"


def test_documents_and_streams() -> None:
    hold(KEY)
    assert scrub_tree({"a": [KEY, 1, {KEY: None}]}) == {"a": [REDACTED, 1, {REDACTED: None}]}
    out = io.StringIO()
    stream = ScrubbedStream(out)
    stream.write("key: " + KEY[:5])  # a secret written in two pieces
    stream.write(KEY[5:] + " done\nnext ")
    assert out.getvalue() == f"key: {REDACTED} done\n"
    stream.flush()
    assert out.getvalue() == f"key: {REDACTED} done\nnext "
    assert stream.isatty() is False and not hasattr(stream, "buffer")
