"""Secrets never reach an output: one redactor for locals, source lines, command lines and URLs."""

from __future__ import annotations

from prefect_cancel_doctor.redact import REDACTED, redact_argv, redact_code, redact_url_passwords


def test_command_lines_lose_their_secrets_and_keep_their_shape() -> None:
    argv = (
        "python",
        "etl.py",
        "--password",
        "hunter2",
        "--api-token=tok123",
        "AWS_SECRET_ACCESS_KEY=abc",
        "postgresql://etl:s3cret@db:5432/x",
        "--pool",
        "default",
    )
    assert redact_argv(argv) == (
        "python",
        "etl.py",
        "--password",
        REDACTED,
        f"--api-token={REDACTED}",
        f"AWS_SECRET_ACCESS_KEY={REDACTED}",
        f"postgresql://etl:{REDACTED}@db:5432/x",
        "--pool",
        "default",
    )


def test_prefect_words_survive_redaction() -> None:
    argv = ("prefect", "worker", "start", "--pool", "p", "--type", "process")
    assert redact_argv(argv) == argv
    assert redact_argv(("python", "-m", "prefect.engine")) == ("python", "-m", "prefect.engine")


def test_urls_and_source_lines() -> None:
    assert redact_url_passwords("http://admin:pw@host/api") == f"http://admin:{REDACTED}@host/api"
    assert redact_code('session = "abc"') == f'session = "{REDACTED}"'
    assert redact_code('client_key: "abc"') == f'client_key: "{REDACTED}"'
