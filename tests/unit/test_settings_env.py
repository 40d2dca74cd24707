"""Settings read from the environment: a wrong value names its variable and never echoes a secret."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.settings import Settings, _may_show, load_settings

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("IMPROMPTU_") or name == "NATS_URL":
            monkeypatch.delenv(name)


def test_a_wrong_number_names_the_variable_and_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPROMPTU_STREAM_MAX_BYTES", "-5")
    monkeypatch.setenv("IMPROMPTU_DELIVERY__MAX_DELIVERIES", "many")
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith("bad settings in the environment: ")
    assert "IMPROMPTU_STREAM_MAX_BYTES: Input should be greater than or equal to 0 (got '-5')" in message
    assert "IMPROMPTU_DELIVERY__MAX_DELIVERIES: Input should be a valid integer" in message and "'many'" in message


@pytest.mark.parametrize(
    ("days", "window", "refused"),
    [("2", None, True), ("7", None, False), ("30", str(31 * 86400), True), ("0", None, False), ("90", None, False)],
)
def test_stream_retention_must_keep_a_week_and_the_duplicate_window(
    monkeypatch: pytest.MonkeyPatch, days: str, window: str | None, refused: bool
) -> None:
    monkeypatch.setenv("IMPROMPTU_STREAM_MAX_AGE_DAYS", days)
    if window:
        monkeypatch.setenv("IMPROMPTU_DUPLICATE_WINDOW_SECONDS", window)
    if not refused:
        assert load_settings().stream_max_age_days == float(days)
        return
    with pytest.raises(ConfigError, match=f"stream_max_age_days={days}: keep messages at least 7 days"):
        load_settings()


def test_a_wrong_secret_is_named_but_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    leaked = "not-json-but-a-password-hash-secret"
    monkeypatch.setenv("IMPROMPTU_FACILITATOR_LOGINS", leaked)
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "IMPROMPTU_FACILITATOR_LOGINS" in str(refused.value)
    assert leaked not in str(refused.value)


def test_a_login_of_the_wrong_shape_is_named_without_its_hash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMPROMPTU_FACILITATOR_LOGINS", '{"ana": {"password_hash": ["$argon2id$v=19$secret-part"]}}')
    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert "IMPROMPTU_FACILITATOR_LOGINS__ANA__PASSWORD_HASH: Input should be a valid string" in str(refused.value)
    assert "secret-part" not in str(refused.value)


def test_the_cli_exits_1_with_the_reason_and_no_traceback(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(IMPROMPTU_DATA_DIR=str(tmp_path), IMPROMPTU_STREAM_MAX_AGE_DAYS="a week")
    done = subprocess.run([IMPROMPTU, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: bad settings in the environment: IMPROMPTU_STREAM_MAX_AGE_DAYS: ")
    assert "Traceback" not in done.stderr


ARGON2_HASH = "$argon2id$v=19$m=65536,t=3,p=4$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2g"


@pytest.mark.parametrize(
    ("value", "named"),
    [  # a showable string where a login's mapping belongs: the error carries the hash as its input
        (f'{{"ana": "{ARGON2_HASH}"}}', "IMPROMPTU_FACILITATOR_LOGINS__ANA: Input should be a valid dictionary"),
        (
            f'{{"ana": {{"password_hash": "{ARGON2_HASH}", "roles": ["{ARGON2_HASH}"]}}}}',
            "IMPROMPTU_FACILITATOR_LOGINS__ANA__ROLES__0: Input should be 'facilitator' or 'ops'",
        ),
    ],
)
def test_a_wrong_login_names_the_variable_but_never_shows_its_hash(
    monkeypatch: pytest.MonkeyPatch, value: str, named: str
) -> None:
    monkeypatch.setenv("IMPROMPTU_FACILITATOR_LOGINS", value)
    monkeypatch.setenv("IMPROMPTU_STREAM_MAX_BYTES", "-5")  # a neighbour that is shown: the check is not blanket
    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert named in message
    assert "(got '-5')" in message
    assert "argon2" not in message and "c2FsdHNhbHRzYWx0" not in message


def test_no_secret_setting_is_ever_echoed() -> None:
    """Every SecretStr setting is hidden by the check load_settings applies to each refused value; a setting of
    any other type shows it. (From the environment a SecretStr takes any string, so this is where it is decided.)"""
    secrets = [name for name, info in Settings.model_fields.items() if "SecretStr" in repr(info.annotation)]
    assert len(secrets) >= 20 and "web_secret" in secrets and "smtp_password" in secrets
    for name in secrets:
        assert not _may_show(name, "hunter2"), name
    assert _may_show("stream_max_bytes", "-5")
    assert not _may_show("not_a_setting", "-5")


def test_the_cli_never_prints_a_login_hash(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_") and k != "NATS_URL"}
    env.update(IMPROMPTU_DATA_DIR=str(tmp_path), IMPROMPTU_FACILITATOR_LOGINS=f'{{"ana": "{ARGON2_HASH}"}}')
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])  # this checkout's code, not the installed one
    done = subprocess.run([IMPROMPTU, "status"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert done.stderr.startswith("error: bad settings in the environment: IMPROMPTU_FACILITATOR_LOGINS__ANA: ")
    assert "argon2" not in done.stderr + done.stdout and "Traceback" not in done.stderr
