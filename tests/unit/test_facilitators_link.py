"""`impromptu facilitators link NAME --slack-user U… --email ADDRESS`: whose clicks in a notice decide as whom."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.domain.notify import email_recipients
from pipeline.settings import Settings
from pipeline.web.approval.slack import SlackUser, login_for

ROOT = Path(__file__).resolve().parents[2]


def _cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMPROMPTU_")}
    env.update({"IMPROMPTU_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)})
    command = [sys.executable, "-c", "from pipeline.cli import main; main()", *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60)


def test_link_maps_slack_and_email_to_the_login_and_a_reset_keeps_them(tmp_path: Path) -> None:
    assert _cli(tmp_path, "facilitators", "add", "ana", "--no-password").returncode == 0
    linked = _cli(tmp_path, "facilitators", "link", "ana", "--slack-user", "U012AB3CD", "--email", "ana@example.org")
    assert linked.returncode == 0, linked.stderr
    assert linked.stdout.strip() == "ana: slack U012AB3CD, e-mail ana@example.org"
    assert _cli(tmp_path, "facilitators", "add", "ana", "--no-password").returncode == 0  # a new token

    settings = Settings(data_dir=tmp_path, notify_email_to=["ANA@example.org", "team@example.org"])
    assert login_for(settings, SlackUser(id="U012AB3CD")) == "ana"
    assert login_for(settings, SlackUser(id="U999", username="ana")) is None  # a username is not an identity
    assert email_recipients(settings) == ([("ANA@example.org", "ana")], ["team@example.org"])


def test_link_refuses_what_is_not_a_slack_id_or_a_login_in_one_line(tmp_path: Path) -> None:
    assert _cli(tmp_path, "facilitators", "add", "ana", "--no-password").returncode == 0
    for args, said in (
        (("ana", "--slack-user", "@ana"), "is not a Slack member id"),
        (("ana", "--email", "not-an-address"), "is not an e-mail address"),
        (("nobody", "--slack-user", "U012AB3CD"), "no saved login for 'nobody'"),
        (("ana",), "give --slack-user"),
    ):
        refused = _cli(tmp_path, "facilitators", "link", *args)
        assert refused.returncode == 1 and said in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
