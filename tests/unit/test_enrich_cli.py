"""`impromptu enrich`: what the stage makes of a page, for an operator debugging it; refusals exit 1 with a reason."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner, Result

from pipeline.cli import cli
from pipeline.demo import ASSETS, article_server
from pipeline.net.fetch import FetchRefused, allow_rules

SEED = ASSETS / "bersin-article.html"


def invoke(*args: str, **env: str) -> Result:
    result = CliRunner().invoke(cli, ["enrich", *args], env=env)
    assert result.exit_code == 0, result.output
    return result


def run(*args: str, **env: str) -> dict[str, object]:
    """The JSON on stdout: log lines (warnings about the settings, say) go to stderr and never into it."""
    return json.loads(invoke(*args, **env).stdout)


def test_a_saved_page_with_its_url() -> None:
    out = run("--html", str(SEED), "--url", "https://www.linkedin.com/pulse/why-elearning")
    article = out["article"]
    assert isinstance(article, dict)
    assert article["title"] == "Why eLearning Isn't Working for Leadership and Soft Skills"
    assert article["author"] == "Josh Bersin" and article["final_url"] == "https://www.linkedin.com/pulse/why-elearning"
    assert out["respected_author"] == "Josh Bersin"  # the default rules respect him
    topics = out["topics"]
    assert isinstance(topics, dict) and topics["leadership"] > 0.5
    text = str(out["text"])
    assert len(text.split()) > 100 and "Great data" not in text  # the main text, without the comments


def test_a_local_page_is_fetched_only_when_allowed() -> None:
    with article_server(SEED.read_bytes()) as url:
        refused = CliRunner().invoke(cli, ["enrich", url], env={"IMPROMPTU_FETCH_ALLOW": "[]"})
        assert refused.exit_code == 1
        assert isinstance(refused.exception, FetchRefused) and refused.exception.reason == "literal_ip"
        assert "IMPROMPTU_FETCH_ALLOW" in str(refused.exception)
        allow_rules.cache_clear()  # its warnings are logged once per process: this test wants to see where
        allowed = invoke(url, IMPROMPTU_FETCH_ALLOW='["127.0.0.1/32"]')
    out = json.loads(allowed.stdout)  # only the JSON: the warning below is not in it
    assert isinstance(out["article"], dict) and out["article"]["url"] == url
    assert "fetch.allow_any_port" in allowed.stderr and "fetch.allow_any_port" not in allowed.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [([], "give a URL, or --html FILE [--url URL]"), (["--html", "/nonexistent.html"], "cannot read")],
)
def test_bad_input_is_an_error(args: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, ["enrich", *args])
    assert result.exit_code == 1 and message in str(result.exception)
