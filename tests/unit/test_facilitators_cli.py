"""`impromptu facilitators add/list/remove`: logins kept as hashes only, in a file only its owner can read."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from pipeline.settings import Settings
from pipeline.web.auth import facilitator_for_token, verify_password

IMPROMPTU = str(Path(sys.executable).parent / "impromptu")
PASSWORD = "correct horse battery staple"


def _cli(data_dir: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env["IMPROMPTU_DATA_DIR"] = str(data_dir)
    return subprocess.run([IMPROMPTU, *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_add_keeps_only_hashes_readable_by_the_owner_and_prints_the_token_once(tmp_path: Path) -> None:
    added = _cli(tmp_path, "facilitators", "add", "ana", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    token = added.stdout.split("API token (shown once): ")[1].strip()
    stored = (tmp_path / "facilitators.json").read_text()
    assert PASSWORD not in stored and token not in stored and "$argon2id$" in stored
    assert stat.S_IMODE((tmp_path / "facilitators.json").stat().st_mode) == 0o600

    logins = Settings(data_dir=tmp_path).current_logins()
    assert verify_password(logins, "ana", PASSWORD) and not verify_password(logins, "ana", "wrong password!")
    assert facilitator_for_token(logins, token) == "ana"

    assert _cli(tmp_path, "facilitators", "add", "ben", "--no-password").returncode == 0
    assert _cli(tmp_path, "facilitators", "list").stdout.splitlines() == [
        "ana  web, api  roles: facilitator",
        "ben  api  roles: facilitator",
    ]
    assert _cli(tmp_path, "facilitators", "remove", "ben").returncode == 0
    assert _cli(tmp_path, "facilitators", "list").stdout.splitlines() == ["ana  web, api  roles: facilitator"]


def test_roles_are_given_with_role_and_default_to_facilitator(tmp_path: Path) -> None:
    ops = _cli(tmp_path, "facilitators", "add", "olga", "--no-password", "--role", "ops")
    both = _cli(tmp_path, "facilitators", "add", "bo", "--no-password", "--role", "ops", "--role", "facilitator")
    assert ops.returncode == both.returncode == 0, ops.stderr + both.stderr
    assert "(roles: ops)" in ops.stdout and "(roles: ops, facilitator)" in both.stdout
    assert _cli(tmp_path, "facilitators", "list").stdout.splitlines() == [
        "bo  api  roles: ops, facilitator",
        "olga  api  roles: ops",
    ]
    logins = Settings(data_dir=tmp_path).current_logins()
    assert (logins["olga"].roles, logins["bo"].roles) == (["ops"], ["ops", "facilitator"])

    unknown = _cli(tmp_path, "facilitators", "add", "eve", "--no-password", "--role", "admin")
    assert unknown.returncode == 1 and "unknown role 'admin': choose facilitator or ops" in unknown.stderr
    assert "eve" not in (tmp_path / "facilitators.json").read_text()


def test_short_passwords_and_unknown_names_are_refused_with_a_reason(tmp_path: Path) -> None:
    short = _cli(tmp_path, "facilitators", "add", "ana", "--password-stdin", stdin="short\n")
    assert short.returncode == 1 and "at least 10 characters" in short.stderr
    assert not (tmp_path / "facilitators.json").exists()
    missing = _cli(tmp_path, "facilitators", "remove", "zoe")
    assert missing.returncode == 1 and "no saved login for 'zoe'" in missing.stderr


def test_logins_from_the_environment_win_over_saved_ones(tmp_path: Path) -> None:
    assert _cli(tmp_path, "facilitators", "add", "ana", "--no-password").returncode == 0
    settings = Settings(data_dir=tmp_path, facilitator_logins={"ana": {"token_sha256": "ab" * 32}})
    assert settings.current_logins()["ana"].token_sha256 == "ab" * 32
