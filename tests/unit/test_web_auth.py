"""Facilitators' secrets: argon2 passwords, API token hashes, the login cookie's secret kept in DATA_DIR."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.errors import ConfigError
from pipeline.keys import SECRET_FILE, web_secret
from pipeline.settings import FacilitatorLogin, Settings
from pipeline.web.auth import (
    facilitator_for_token,
    has_role,
    hash_password,
    new_api_token,
    safe_next,
    token_sha256,
    verify_password,
)

ANA_HASH = hash_password("correct horse battery staple")


def test_a_password_hash_is_argon2id_and_verifies_only_the_right_password() -> None:
    logins = {"ana": FacilitatorLogin(password_hash=ANA_HASH), "ben": FacilitatorLogin(token_sha256="0" * 64)}

    assert ANA_HASH.startswith("$argon2id$")
    assert "correct horse" not in ANA_HASH
    assert hash_password("correct horse battery staple") != ANA_HASH  # salted
    assert verify_password(logins, "ana", "correct horse battery staple")
    assert not verify_password(logins, "ana", "correct horse battery stapler")
    assert not verify_password(logins, "ana", "")
    assert not verify_password(logins, "nobody", "correct horse battery staple")  # unknown name
    assert not verify_password(logins, "ben", "anything")  # a token-only facilitator has no password
    assert not verify_password({"eve": FacilitatorLogin(password_hash="not-a-hash")}, "eve", "x")


def test_an_api_token_is_random_and_only_its_sha256_is_needed_to_recognise_it() -> None:
    token, digest = new_api_token()
    other, _ = new_api_token()

    assert token != other and len(token) >= 40
    assert digest == hashlib.sha256(token.encode()).hexdigest() == token_sha256(token)
    logins = {
        "ana": FacilitatorLogin(password_hash=ANA_HASH, token_sha256=digest),
        "ben": FacilitatorLogin(token_sha256=token_sha256(other).upper()),  # hex in either case
        "cy": FacilitatorLogin(password_hash=ANA_HASH),
    }
    assert facilitator_for_token(logins, token) == "ana"
    assert facilitator_for_token(logins, other) == "ben"
    assert facilitator_for_token(logins, digest) is None  # the hash itself is not a token
    assert facilitator_for_token(logins, "") is None
    assert facilitator_for_token({}, token) is None


def test_the_web_secret_file_is_created_private_once_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    path = tmp_path / "data" / SECRET_FILE

    first = web_secret(settings)

    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(first) >= 32
    assert web_secret(Settings(data_dir=tmp_path / "data")) == first  # another worker, or after a restart
    assert [p.name for p in path.parent.iterdir()] == [SECRET_FILE]  # no scratch file left behind
    assert web_secret(Settings(data_dir=tmp_path / "elsewhere")) != first


def test_a_configured_web_secret_wins_and_must_be_long_enough(tmp_path: Path) -> None:
    secret = "s" * 40
    assert web_secret(Settings(data_dir=tmp_path, web_secret=SecretStr(secret))) == secret
    assert not (tmp_path / SECRET_FILE).exists()
    with pytest.raises(ConfigError, match="at least 32"):
        web_secret(Settings(data_dir=tmp_path, web_secret=SecretStr("short")))


def test_an_empty_secret_file_is_a_config_error_not_a_weak_key(tmp_path: Path) -> None:
    (tmp_path / SECRET_FILE).write_text("\n")
    with pytest.raises(ConfigError, match="delete it"):
        web_secret(Settings(data_dir=tmp_path))


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("/proposals/p-1", "/proposals/p-1"),
        ("/proposals?show=all", "/proposals?show=all"),
        (None, "/proposals"),
        ("", "/proposals"),
        ("https://evil.example/", "/proposals"),
        ("//evil.example/x", "/proposals"),
        ("/\\evil.example", "/proposals"),
        ("proposals", "/proposals"),
    ],
)
def test_after_login_only_a_path_on_this_site_is_followed(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


def test_a_login_is_a_facilitator_unless_given_other_roles(tmp_path: Path) -> None:
    saved_before_roles = tmp_path / "facilitators.json"
    saved_before_roles.write_text('{"ana": {"password_hash": null, "token_sha256": "' + "0" * 64 + '"}}')
    logins = Settings(data_dir=tmp_path).current_logins()
    assert logins["ana"].roles == ["facilitator"]

    settings = Settings(
        data_dir=tmp_path,
        facilitator_logins={"olga": {"roles": ["ops"]}, "bo": {"roles": ["facilitator", "ops"]}},
    )
    assert has_role(settings, "olga", "ops") and not has_role(settings, "olga", "facilitator")
    assert has_role(settings, "bo", "ops") and has_role(settings, "bo", "facilitator")
    assert not has_role(settings, "nobody", "ops")
    with pytest.raises(ValidationError, match="roles"):
        FacilitatorLogin(roles=["admin"])  # type: ignore[list-item]
