from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealbox.errors import InvalidSpecError
from sealbox.spec.secret import (
    HostPattern,
    Secret,
    SecretInjection,
    parse_secret_option,
    read_secret_file,
    validate_secrets,
)

TOKEN = "ghp_0123456789abcdefghijABCDEFGHIJ012345"


# HostPattern.parse


@pytest.mark.parametrize(
    ("text", "host", "wildcard", "port"),
    [
        ("github.com", "github.com", False, None),
        ("GitHub.COM", "github.com", False, None),
        ("github.com.", "github.com", False, None),
        ("*.githubusercontent.com", "githubusercontent.com", True, None),
        ("*.co.uk", "co.uk", True, None),
        ("github.com:443", "github.com", False, 443),
        ("*.example.com:8443", "example.com", True, 8443),
        ("localhost", "localhost", False, None),
        ("127.0.0.1", "127.0.0.1", False, None),
        ("127.0.0.1:8080", "127.0.0.1", False, 8080),
        ("[::1]:8443", "::1", False, 8443),
        ("[::1]", "::1", False, None),
        ("::1", "::1", False, None),
        ("[0:0::1]", "::1", False, None),
        (" api.github.com ", "api.github.com", False, None),
        ("xn--bcher-kva.example", "xn--bcher-kva.example", False, None),
    ],
)
def test_host_pattern_parse_valid(text: str, host: str, wildcard: bool, port: int | None) -> None:
    pattern = HostPattern.parse(text)
    assert pattern.host == host
    assert pattern.wildcard is wildcard
    assert pattern.port == port


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("*", "every host"),
        ("*.com", "at least two labels"),
        ("*.com:443", "at least two labels"),
        ("a.*.b", "whole first label"),
        ("*foo.com", "whole first label"),
        ("**.example.com", "whole first label"),
        (":443", "bare port"),
        ("github.com:0", "invalid port"),
        ("github.com:65536", "invalid port"),
        ("github.com:https", "invalid port"),
        ("github.com:", "invalid port"),
        ("github.com:+443", "invalid port"),
        ("[::1]:", "invalid port"),
        ("[::1", "missing ']'"),
        ("[::1]x", "expected ':PORT'"),
        ("[github.com]", "invalid IPv6"),
        ("fe80::1%eth0", "invalid IPv6"),
        ("bad_host.com", "label"),
        ("-github.com", "label"),
        ("github-.com", "label"),
        ("a..b", "label"),
        ("1.2.3.999", "all digits"),
        ("bücher.example", "punycode"),
        ("a" * 64 + ".com", "label"),
        (".".join(["abcdefghi"] * 26), "253"),
    ],
)
def test_host_pattern_parse_invalid(text: str, reason: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        HostPattern.parse(text)
    assert caught.value.field == "host pattern"
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("GitHub.com", "github.com"),
        ("*.Example.com:443", "*.example.com:443"),
        ("[::1]:8443", "[::1]:8443"),
        ("::1", "[::1]"),
        ("10.0.0.1:22", "10.0.0.1:22"),
    ],
)
def test_host_pattern_str_round_trip(text: str, shown: str) -> None:
    pattern = HostPattern.parse(text)
    assert str(pattern) == shown
    assert HostPattern.parse(str(pattern)) == pattern


# HostPattern.matches


@pytest.mark.parametrize(
    ("pattern", "host", "port", "expected"),
    [
        ("github.com", "github.com", 443, True),
        ("github.com", "GITHUB.com.", 443, True),
        ("github.com", "api.github.com", 443, False),
        ("github.com", "evilgithub.com", 443, False),
        ("github.com", "github.com", None, True),
        ("*.example.com", "a.example.com", 443, True),
        ("*.example.com", "a.b.c.example.com", 443, True),
        ("*.example.com", "example.com", 443, False),
        ("*.example.com", "badexample.com", 443, False),
        ("github.com:443", "github.com", 443, True),
        ("github.com:443", "github.com", 8443, False),
        ("github.com:443", "github.com", None, False),
        ("127.0.0.1", "127.0.0.1", 80, True),
        ("127.0.0.1", "127.0.0.2", 80, False),
        ("[::1]:8443", "[::1]", 8443, True),
        ("[::1]:8443", "0:0::1", 8443, True),
        ("[::1]:8443", "::1", 443, False),
        ("*.example.com", "1.2.3.4", 443, False),
    ],
)
def test_host_pattern_matches(pattern: str, host: str, port: int | None, expected: bool) -> None:
    assert HostPattern.parse(pattern).matches(host, port) is expected


# Secret construction


def test_secret_env_basic() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com", "*.githubusercontent.com"])
    assert secret.allow_hosts == (HostPattern.parse("github.com"), HostPattern.parse("*.githubusercontent.com"))
    assert secret.placeholder is None
    assert secret.inject == SecretInjection(headers=True, basic_auth=True, query=True, body=False)
    assert secret.allow_plaintext is False
    assert secret.on_violation == "block"


def test_secret_env_allow_alias() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, allow="github.com,api.github.com")
    assert [str(pattern) for pattern in secret.allow_hosts] == ["github.com", "api.github.com"]


def test_secret_env_allow_and_allow_hosts() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"], allow=["github.com"])
    assert "not both" in caught.value.reason


@pytest.mark.parametrize("hosts", [None, [], "", " , "])
def test_secret_env_empty_hosts(hosts: list[str] | str | None) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", TOKEN, hosts)
    assert caught.value.field == "secret allow_hosts"
    assert "empty host list would mean no host" in caught.value.reason
    assert "all hosts" not in str(caught.value)


@pytest.mark.parametrize("name", ["", "1TOKEN", "MY-TOKEN", "A B", "TOKEN=1"])
def test_secret_name_invalid(name: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env(name, TOKEN, ["github.com"])
    assert caught.value.field == "secret name"


@pytest.mark.parametrize("name", ["_", "a", "GITHUB_TOKEN", "token2"])
def test_secret_name_valid(name: str) -> None:
    assert Secret.env(name, TOKEN, ["github.com"]).name == name


def test_secret_value_missing() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", allow_hosts=["github.com"])
    assert caught.value.value == "<value of GITHUB_TOKEN>"


def test_secret_value_empty() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", "", ["github.com"])
    assert caught.value.reason.startswith("empty")


@pytest.mark.parametrize("character", ["\r", "\n", "\0"])
def test_secret_value_control_character(character: str) -> None:
    value = f"tok{character}en-1234567890"
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", value, ["github.com"])
    assert caught.value.value == "<value of GITHUB_TOKEN>"
    assert "en-1234567890" not in str(caught.value)


def test_secret_repr_hides_value() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"])
    assert TOKEN not in repr(secret)
    assert "GITHUB_TOKEN" in repr(secret)


@pytest.mark.parametrize(
    ("placeholder", "reason"),
    [
        ("short", "shorter than 16"),
        ("x" * 15, "shorter than 16"),
        ("has space 0123456789", "only ASCII letters"),
        ("ümlaut0123456789abc", "only ASCII letters"),
        ("a.b.c.d.e.f.g.h.i.j", "only ASCII letters"),
        (TOKEN, "equal to the value"),
    ],
)
def test_secret_placeholder_invalid(placeholder: str, reason: str) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"], placeholder=placeholder)
    assert reason in caught.value.reason
    assert TOKEN not in str(caught.value)


def test_secret_placeholder_valid() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"], placeholder="ghp_placeholder-000_1")
    assert secret.placeholder == "ghp_placeholder-000_1"


def test_secret_on_violation_invalid() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"], on_violation="ignore")
    assert caught.value.field == "secret on_violation"


def test_secret_constructor_accepts_strings() -> None:
    secret = Secret(name="T", value=TOKEN, allow_hosts=("github.com", HostPattern.parse("*.example.com")))  # type: ignore[arg-type]
    assert secret.allow_hosts == (HostPattern.parse("github.com"), HostPattern.parse("*.example.com"))


# JSON round trip


def test_secret_to_json_hides_value() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"])
    data = secret.to_json()
    assert "value" not in data
    assert TOKEN not in json.dumps(data)


def test_secret_json_round_trip_without_value() -> None:
    secret = Secret.env(
        "GITHUB_TOKEN",
        TOKEN,
        ["github.com:443", "*.example.com", "[::1]:8443"],
        placeholder="ghp_placeholder0123456789",
        inject=SecretInjection(body=True, query=False),
        allow_plaintext=True,
        on_violation="log",
    )
    restored = Secret.from_json(json.loads(json.dumps(secret.to_json())))
    assert restored.value is None
    assert restored.allow_hosts == secret.allow_hosts
    assert restored.inject == secret.inject
    assert restored.placeholder == secret.placeholder
    assert restored.allow_plaintext is True
    assert restored.on_violation == "log"


def test_secret_json_round_trip_with_value() -> None:
    secret = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"])
    restored = Secret.from_json(secret.to_json(include_value=True))
    assert restored == secret


def test_secret_from_json_unknown_key() -> None:
    data = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"]).to_json()
    data["hosts"] = ["github.com"]
    with pytest.raises(InvalidSpecError) as caught:
        Secret.from_json(data)
    assert caught.value.value == "hosts"


def test_secret_from_json_inject_not_bool() -> None:
    data = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"]).to_json()
    data["inject"] = {"body": "yes"}
    with pytest.raises(InvalidSpecError) as caught:
        Secret.from_json(data)
    assert caught.value.field == "secret inject.body"


def test_secret_from_json_value_not_string() -> None:
    data = Secret.env("GITHUB_TOKEN", TOKEN, ["github.com"]).to_json()
    data["value"] = 12345
    with pytest.raises(InvalidSpecError) as caught:
        Secret.from_json(data)
    assert caught.value.value == "<value of GITHUB_TOKEN>"


# Command-line options and secret files


def test_secret_option_with_value() -> None:
    secret = parse_secret_option(f"GITHUB_TOKEN={TOKEN}@github.com,*.githubusercontent.com", {})
    assert secret.name == "GITHUB_TOKEN"
    assert secret.value == TOKEN
    assert [str(pattern) for pattern in secret.allow_hosts] == ["github.com", "*.githubusercontent.com"]


def test_secret_option_value_with_at_and_equals() -> None:
    secret = parse_secret_option("PASSWORD=p@ss=word@db.example.com:5432", {})
    assert secret.value == "p@ss=word"
    assert str(secret.allow_hosts[0]) == "db.example.com:5432"


def test_secret_option_from_environ() -> None:
    secret = parse_secret_option("GITHUB_TOKEN@github.com", {"GITHUB_TOKEN": TOKEN})
    assert secret.value == TOKEN


def test_secret_option_environ_missing() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_secret_option("GITHUB_TOKEN@github.com", {})
    assert "export GITHUB_TOKEN" in caught.value.reason


def test_secret_option_missing_hosts() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_secret_option(f"GITHUB_TOKEN={TOKEN}", {})
    assert "missing '@HOST'" in caught.value.reason
    assert TOKEN not in str(caught.value)


def test_secret_option_empty_hosts() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_secret_option(f"GITHUB_TOKEN={TOKEN}@", {})
    assert "empty host list" in caught.value.reason
    assert TOKEN not in str(caught.value)


def test_secret_option_bad_host_hides_value() -> None:
    with pytest.raises(InvalidSpecError) as caught:
        parse_secret_option(f"GITHUB_TOKEN={TOKEN}@*.com", {})
    assert caught.value.field == "host pattern"
    assert TOKEN not in str(caught.value)


@pytest.fixture
def secret_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "secrets.env"
    yield path
    path.unlink(missing_ok=True)


def test_secret_file_reads_lines(secret_file: Path) -> None:
    secret_file.write_text(
        f"# tokens for the build\n\nGITHUB_TOKEN={TOKEN}@github.com\n  NPM_TOKEN@registry.npmjs.org  \n"
    )
    secrets = read_secret_file(secret_file, {"NPM_TOKEN": "npm_abcdefghijklmnopqrstuvwxyz"})
    assert [secret.name for secret in secrets] == ["GITHUB_TOKEN", "NPM_TOKEN"]
    assert secrets[1].value == "npm_abcdefghijklmnopqrstuvwxyz"


def test_secret_file_error_names_line(secret_file: Path) -> None:
    secret_file.write_text(f"# comment\nGITHUB_TOKEN={TOKEN}@github.com\nBAD={TOKEN}@\n")
    with pytest.raises(InvalidSpecError) as caught:
        read_secret_file(secret_file, {})
    assert caught.value.field == f"secret allow_hosts in {secret_file} line 3"
    assert TOKEN not in str(caught.value)


def test_secret_file_duplicate(secret_file: Path) -> None:
    secret_file.write_text(f"A={TOKEN}@github.com\nA={TOKEN}@gitlab.com\n")
    with pytest.raises(InvalidSpecError) as caught:
        read_secret_file(secret_file, {})
    assert "duplicate" in caught.value.reason


def test_secret_file_missing(tmp_path: Path) -> None:
    with pytest.raises(InvalidSpecError) as caught:
        read_secret_file(tmp_path / "absent.env", {})
    assert "cannot be read" in caught.value.reason


# validate_secrets


def test_validate_secrets_duplicate_names() -> None:
    first = Secret.env("TOKEN", TOKEN, ["github.com"])
    second = Secret.env("TOKEN", "other-value", ["gitlab.com"])
    with pytest.raises(InvalidSpecError) as caught:
        validate_secrets([first, second])
    assert caught.value.value == "TOKEN"


def test_validate_secrets_duplicate_placeholders() -> None:
    first = Secret.env("A", TOKEN, ["github.com"], placeholder="placeholder-0123456789")
    second = Secret.env("B", "other-value", ["gitlab.com"], placeholder="placeholder-0123456789")
    with pytest.raises(InvalidSpecError) as caught:
        validate_secrets([first, second])
    assert "must be unique" in caught.value.reason


def test_validate_secrets_nested_placeholders() -> None:
    first = Secret.env("A", TOKEN, ["github.com"], placeholder="placeholder-0123456789")
    second = Secret.env("B", "other-value", ["gitlab.com"], placeholder="placeholder-0123456789-long")
    with pytest.raises(InvalidSpecError) as caught:
        validate_secrets([first, second])
    assert "must not contain one another" in caught.value.reason


def test_validate_secrets_placeholder_in_value() -> None:
    first = Secret.env("A", TOKEN, ["github.com"], placeholder="placeholder-0123456789")
    second = Secret.env("B", "xx-placeholder-0123456789-xx", ["gitlab.com"])
    with pytest.raises(InvalidSpecError) as caught:
        validate_secrets([first, second])
    assert "value of B" in caught.value.reason


def test_validate_secrets_accepts_distinct() -> None:
    first = Secret.env("A", TOKEN, ["github.com"])
    second = Secret.env("B", "other-value", ["gitlab.com"])
    assert validate_secrets([first, second]) is None
