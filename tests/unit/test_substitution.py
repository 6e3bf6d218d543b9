from __future__ import annotations

import base64
import gzip
import logging
import random
import string
import zlib
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealbox.errors import InvalidSpecError
from sealbox.gateway import content_coding
from sealbox.gateway.placeholders import assign_placeholders, make_placeholder
from sealbox.gateway.substitution import Substituter, percent_encode
from sealbox.spec.secret import Secret, SecretInjection

ALPHANUMERIC = set(string.ascii_letters + string.digits)

GH_VALUE = "ghp_realValue0123456789abcdefghijklmnop"
GH_PLACEHOLDER = "ghp_Placeholder0123456789ABCDEFGHIJKLM"
API_VALUE = "k/y+v&l=1 2"
API_PLACEHOLDER = "apiKeyPlaceholder0123456789abcdef"
PLAIN_VALUE = "plain-text-value"
PLAIN_PLACEHOLDER = "plainPlaceholder0123456789abcdef"

GH = Secret.env("GH_TOKEN", GH_VALUE, ["github.com", "*.githubusercontent.com"], placeholder=GH_PLACEHOLDER)
API = Secret.env(
    "API_KEY",
    API_VALUE,
    ["api.example.com:443"],
    placeholder=API_PLACEHOLDER,
    inject=SecretInjection(body=True),
)
PLAIN = Secret.env("PLAIN", PLAIN_VALUE, ["plain.test"], placeholder=PLAIN_PLACEHOLDER, allow_plaintext=True)


@pytest.fixture
def substituter() -> Substituter:
    return Substituter([GH, API, PLAIN])


def basic(credentials: bytes) -> bytes:
    return b"Basic " + base64.b64encode(credentials)


def escape_every_other(text: str) -> bytes:
    """Percent-encode every second character, alternating upper- and lower-case hex."""
    parts = []
    for index, char in enumerate(text.encode()):
        if index % 2:
            parts.append(bytes((char,)))
        else:
            parts.append((b"%%%02X" if index % 4 else b"%%%02x") % char)
    return b"".join(parts)


# make_placeholder


@pytest.mark.parametrize(
    ("value", "prefix"),
    [
        ("ghp_" + "a" * 36, "ghp_"),
        ("sk-" + "b" * 45, "sk-"),
        ("github_pat_" + "c" * 70, "github_"),
        ("xoxb-1234-5678-abcdefghijkl", "xoxb-"),
        ("abcdefghijk_" + "d" * 12, "abcdefghijk_"),
    ],
)
def test_placeholder_keeps_prefix(value: str, prefix: str) -> None:
    placeholder = make_placeholder(value)
    assert len(placeholder) == len(value)
    assert placeholder.startswith(prefix)
    assert set(placeholder[len(prefix) :]) <= ALPHANUMERIC


@pytest.mark.parametrize(
    "value",
    [
        "abcdefghijkl_" + "e" * 20,  # prefix of 13 characters
        "abcdefghij_12345",  # only 5 characters after the prefix
        "a.b_cdefghijklmnopqrst",  # '.' before the separator
        "_leading-underscore-value",  # nothing before the separator
        "plainalphanumericvalue0123",  # no separator
    ],
)
def test_placeholder_without_prefix(value: str) -> None:
    placeholder = make_placeholder(value)
    assert len(placeholder) == len(value)
    assert set(placeholder) <= ALPHANUMERIC


@pytest.mark.parametrize("value", ["x", "short", "fifteen-chars!!"])
def test_placeholder_short_value(value: str) -> None:
    placeholder = make_placeholder(value)
    assert len(placeholder) == 32
    assert set(placeholder) <= ALPHANUMERIC


def test_placeholder_sixteen_characters() -> None:
    assert len(make_placeholder("0123456789abcdef")) == 16


def test_placeholder_utf8_length() -> None:
    value = "tok_" + "é" * 12  # 16 characters, 28 bytes in UTF-8
    placeholder = make_placeholder(value)
    assert len(placeholder.encode()) == len(value.encode())
    assert placeholder.startswith("tok_")


def test_placeholder_is_random() -> None:
    assert make_placeholder("ghp_" + "a" * 36) != make_placeholder("ghp_" + "a" * 36)


# assign_placeholders


class ScriptedRandom(random.Random):
    """A random source whose choice() returns the characters of a fixed script."""

    def __init__(self, script: str) -> None:
        super().__init__(0)
        self._characters: Iterator[str] = iter(script)

    def choice(self, sequence):  # type: ignore[no-untyped-def, override]
        return next(self._characters)


def test_assign_fills_missing() -> None:
    given_placeholder = Secret.env("A", "value-a", ["a.test"], placeholder="givenPlaceholder0123")
    missing = Secret.env("B", "ghp_" + "b" * 36, ["b.test"])
    first, second = assign_placeholders([given_placeholder, missing])
    assert first is given_placeholder
    assert second.placeholder is not None
    assert second.placeholder.startswith("ghp_")
    assert second.value == missing.value


def test_assign_regenerates_duplicate() -> None:
    secrets = [Secret.env("A", "one", ["a.test"]), Secret.env("B", "two", ["b.test"])]
    rng = ScriptedRandom("A" * 32 + "A" * 32 + "B" * 32)
    first, second = assign_placeholders(secrets, rng)
    assert first.placeholder == "A" * 32
    assert second.placeholder == "B" * 32


def test_assign_regenerates_substring_of_value() -> None:
    secrets = [Secret.env("A", "one", ["a.test"]), Secret.env("B", "x" + "A" * 32 + "x", ["b.test"])]
    rng = ScriptedRandom("A" * 32 + "C" * 32 + "D" * 34)
    first, second = assign_placeholders(secrets, rng)
    assert first.placeholder == "C" * 32
    assert second.placeholder == "D" * 34


def test_assign_regenerates_contained_placeholder() -> None:
    given_placeholder = Secret.env("A", "one", ["a.test"], placeholder="E" * 40)
    secrets = [given_placeholder, Secret.env("B", "two", ["b.test"])]
    rng = ScriptedRandom("E" * 32 + "F" * 32)
    assert assign_placeholders(secrets, rng)[1].placeholder == "F" * 32


def test_assign_gives_up_after_attempts() -> None:
    secrets = [Secret.env("A", "one", ["a.test"], placeholder="G" * 40), Secret.env("B", "two", ["b.test"])]
    with pytest.raises(InvalidSpecError) as caught:
        assign_placeholders(secrets, ScriptedRandom("G" * 32 * 100))
    assert "100 attempts" in caught.value.reason


def test_assign_without_value() -> None:
    stored = Secret(name="A", value=None, allow_hosts=("a.test",))  # type: ignore[arg-type]
    with pytest.raises(InvalidSpecError) as caught:
        assign_placeholders([stored])
    assert caught.value.value == "<value of A>"


def test_assign_many_unique() -> None:
    secrets = [Secret.env(f"S{index}", f"sk-{index:020d}", ["a.test"]) for index in range(50)]
    placeholders = [secret.placeholder for secret in assign_placeholders(secrets)]
    assert len(set(placeholders)) == 50


# Substituter: header values


def test_header_substituted(substituter: Substituter) -> None:
    result = substituter.header_value(b"Authorization", f"token {GH_PLACEHOLDER}".encode(), "github.com", 443, tls=True)
    assert result.data == f"token {GH_VALUE}".encode()
    assert result.substituted == ("GH_TOKEN",)
    assert result.violations == ()


def test_header_wildcard_host(substituter: Substituter) -> None:
    result = substituter.header_value(b"X-Token", GH_PLACEHOLDER.encode(), "raw.githubusercontent.com", 443, tls=True)
    assert result.data == GH_VALUE.encode()


def test_header_unchanged_is_same_object(substituter: Substituter) -> None:
    value = b"Bearer something-else"
    result = substituter.header_value(b"Authorization", value, "github.com", 443, tls=True)
    assert result.data is value
    assert result.substituted == ()
    assert result.violations == ()


def test_header_other_host_violation(substituter: Substituter) -> None:
    value = f"token {GH_PLACEHOLDER}".encode()
    result = substituter.header_value(b"Authorization", value, "evil.test", 443, tls=True)
    assert result.data is value
    assert result.substituted == ()
    assert result.violations == ("GH_TOKEN",)


def test_header_plaintext_violation(substituter: Substituter) -> None:
    value = GH_PLACEHOLDER.encode()
    result = substituter.header_value(b"X-Token", value, "github.com", 80, tls=False)
    assert result.data is value
    assert result.violations == ("GH_TOKEN",)


def test_header_plaintext_allowed(substituter: Substituter) -> None:
    result = substituter.header_value(b"X-Token", PLAIN_PLACEHOLDER.encode(), "plain.test", 80, tls=False)
    assert result.data == PLAIN_VALUE.encode()
    assert result.substituted == ("PLAIN",)


def test_header_port_mismatch_violation(substituter: Substituter) -> None:
    result = substituter.header_value(b"X-Key", API_PLACEHOLDER.encode(), "api.example.com", 8443, tls=True)
    assert result.violations == ("API_KEY",)


def test_header_flag_off_violation() -> None:
    secret = Secret.env(
        "T", GH_VALUE, ["github.com"], placeholder=GH_PLACEHOLDER, inject=SecretInjection(headers=False)
    )
    result = Substituter([secret]).header_value(b"X-Token", GH_PLACEHOLDER.encode(), "github.com", 443, tls=True)
    assert result.data == GH_PLACEHOLDER.encode()
    assert result.violations == ("T",)


def test_header_two_secrets_mixed(substituter: Substituter) -> None:
    value = f"{GH_PLACEHOLDER};{API_PLACEHOLDER};{GH_PLACEHOLDER}".encode()
    result = substituter.header_value(b"Cookie", value, "github.com", 443, tls=True)
    assert result.data == f"{GH_VALUE};{API_PLACEHOLDER};{GH_VALUE}".encode()
    assert result.substituted == ("GH_TOKEN",)
    assert result.violations == ("API_KEY",)


def test_header_overlapping_leftmost_wins() -> None:
    first = Secret.env("FIRST", "first-value", ["a.test"], placeholder="A" * 8 + "B" * 8)
    second = Secret.env("SECOND", "second-value", ["a.test"], placeholder="B" * 8 + "C" * 8)
    data = ("A" * 8 + "B" * 8 + "C" * 8).encode()
    result = Substituter([first, second]).header_value(b"X", data, "a.test", 443, tls=True)
    assert result.data == b"first-value" + b"C" * 8
    assert result.substituted == ("FIRST",)


# Substituter: Basic credentials


def test_basic_password_substituted(substituter: Substituter) -> None:
    value = basic(f"x-access-token:{GH_PLACEHOLDER}".encode())
    result = substituter.header_value(b"Authorization", value, "github.com", 443, tls=True)
    assert result.data == basic(f"x-access-token:{GH_VALUE}".encode())
    assert result.substituted == ("GH_TOKEN",)


def test_basic_user_substituted(substituter: Substituter) -> None:
    value = basic(f"{GH_PLACEHOLDER}:x-oauth-basic".encode())
    result = substituter.header_value(b"authorization", value, "github.com", 443, tls=True)
    assert result.data == basic(f"{GH_VALUE}:x-oauth-basic".encode())


def test_basic_scheme_case_and_blanks_kept(substituter: Substituter) -> None:
    token = base64.b64encode(f"u:{GH_PLACEHOLDER}".encode())
    result = substituter.header_value(b"Authorization", b"bAsIc  " + token + b" ", "github.com", 443, tls=True)
    assert result.data == b"bAsIc  " + base64.b64encode(f"u:{GH_VALUE}".encode()) + b" "


def test_basic_proxy_authorization(substituter: Substituter) -> None:
    value = basic(f"u:{GH_PLACEHOLDER}".encode())
    result = substituter.header_value(b"Proxy-Authorization", value, "github.com", 443, tls=True)
    assert result.data == basic(f"u:{GH_VALUE}".encode())


def test_basic_unpadded_input_repadded(substituter: Substituter) -> None:
    credentials = f"ab:{GH_PLACEHOLDER}".encode()
    unpadded = base64.b64encode(credentials).rstrip(b"=")
    assert len(unpadded) % 4 != 0
    result = substituter.header_value(b"Authorization", b"Basic " + unpadded, "github.com", 443, tls=True)
    assert result.data == basic(f"ab:{GH_VALUE}".encode())


def test_basic_unchanged_is_same_object(substituter: Substituter) -> None:
    value = basic(b"user:password")
    result = substituter.header_value(b"Authorization", value, "github.com", 443, tls=True)
    assert result.data is value
    assert result.substituted == ()


def test_basic_other_host_violation(substituter: Substituter) -> None:
    value = basic(f"u:{GH_PLACEHOLDER}".encode())
    result = substituter.header_value(b"Authorization", value, "gitlab.com", 443, tls=True)
    assert result.data is value
    assert result.violations == ("GH_TOKEN",)


def test_basic_flag_off_violation() -> None:
    secret = Secret.env(
        "T", GH_VALUE, ["github.com"], placeholder=GH_PLACEHOLDER, inject=SecretInjection(basic_auth=False)
    )
    value = basic(f"u:{GH_PLACEHOLDER}".encode())
    result = Substituter([secret]).header_value(b"Authorization", value, "github.com", 443, tls=True)
    assert result.data is value
    assert result.violations == ("T",)


def test_basic_only_in_authorization_headers(substituter: Substituter) -> None:
    value = basic(f"u:{GH_PLACEHOLDER}".encode())
    result = substituter.header_value(b"X-Forwarded-Authorization", value, "github.com", 443, tls=True)
    assert result.data is value


def test_basic_invalid_base64_untouched(substituter: Substituter) -> None:
    value = b"Basic abc"
    result = substituter.header_value(b"Authorization", value, "github.com", 443, tls=True)
    assert result.data is value


# Substituter: request targets


def test_target_literal_value_percent_encoded(substituter: Substituter) -> None:
    target = f"/v1/items?key={API_PLACEHOLDER}&x=1".encode()
    result = substituter.target(target, "api.example.com", 443, tls=True)
    assert result.data == b"/v1/items?key=k%2Fy%2Bv%26l%3D1%202&x=1"
    assert result.substituted == ("API_KEY",)


def test_target_percent_encoded_placeholder(substituter: Substituter) -> None:
    target = b"/repos?access_token=" + escape_every_other(GH_PLACEHOLDER) + b"&a=%20"
    result = substituter.target(target, "github.com", 443, tls=True)
    assert result.data == f"/repos?access_token={GH_VALUE}&a=%20".encode()
    assert result.substituted == ("GH_TOKEN",)


def test_target_fully_escaped_placeholder(substituter: Substituter) -> None:
    escaped = b"".join(b"%%%02x" % char for char in GH_PLACEHOLDER.encode())
    result = substituter.target(b"/p/" + escaped, "github.com", 443, tls=True)
    assert result.data == f"/p/{GH_VALUE}".encode()


def test_target_in_path(substituter: Substituter) -> None:
    result = substituter.target(f"/bot{GH_PLACEHOLDER}/send".encode(), "github.com", 443, tls=True)
    assert result.data == f"/bot{GH_VALUE}/send".encode()


def test_target_other_host_violation(substituter: Substituter) -> None:
    target = b"/?t=" + escape_every_other(GH_PLACEHOLDER)
    result = substituter.target(target, "evil.test", 443, tls=True)
    assert result.data is target
    assert result.violations == ("GH_TOKEN",)


def test_target_query_flag_off_violation() -> None:
    secret = Secret.env("T", GH_VALUE, ["github.com"], placeholder=GH_PLACEHOLDER, inject=SecretInjection(query=False))
    target = f"/?t={GH_PLACEHOLDER}".encode()
    result = Substituter([secret]).target(target, "github.com", 443, tls=True)
    assert result.data is target
    assert result.violations == ("T",)


def test_target_unchanged_is_same_object(substituter: Substituter) -> None:
    target = b"/search?q=a%20b"
    assert substituter.target(target, "github.com", 443, tls=True).data is target


def test_percent_encode_unreserved_kept() -> None:
    assert percent_encode(b"Az09-._~ /?#%\xff") == b"Az09-._~%20%2F%3F%23%25%FF"


# Substituter: bodies


def test_body_identity_substituted(substituter: Substituter) -> None:
    body = f'{{"key": "{API_PLACEHOLDER}"}}'.encode()
    result = substituter.body(body, None, "api.example.com", 443, tls=True)
    assert result.data == f'{{"key": "{API_VALUE}"}}'.encode()
    assert result.substituted == ("API_KEY",)


def test_body_gzip_substituted(substituter: Substituter) -> None:
    body = gzip.compress(f"key={API_PLACEHOLDER}".encode())
    result = substituter.body(body, b"gzip", "api.example.com", 443, tls=True)
    assert gzip.decompress(result.data) == f"key={API_VALUE}".encode()


def test_body_raw_deflate_substituted(substituter: Substituter) -> None:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    body = compressor.compress(f"key={API_PLACEHOLDER}".encode()) + compressor.flush()
    result = substituter.body(body, b"deflate", "api.example.com", 443, tls=True)
    assert content_coding.decode(result.data, b"deflate") == f"key={API_VALUE}".encode()


def test_body_stacked_codings_substituted(substituter: Substituter) -> None:
    plain = f"key={API_PLACEHOLDER}".encode()
    body = zlib.compress(gzip.compress(plain))
    result = substituter.body(body, b"gzip, deflate", "api.example.com", 443, tls=True)
    assert gzip.decompress(zlib.decompress(result.data)) == f"key={API_VALUE}".encode()


def test_body_without_placeholder_same_object(substituter: Substituter) -> None:
    body = gzip.compress(b"nothing to see")
    assert substituter.body(body, b"gzip", "api.example.com", 443, tls=True).data is body


def test_body_flag_off_violation(substituter: Substituter) -> None:
    body = gzip.compress(f"token={GH_PLACEHOLDER}".encode())
    result = substituter.body(body, b"gzip", "github.com", 443, tls=True)
    assert result.data is body
    assert result.violations == ("GH_TOKEN",)


def test_body_corrupt_untouched(substituter: Substituter, caplog: pytest.LogCaptureFixture) -> None:
    body = gzip.compress(f"key={API_PLACEHOLDER}".encode())[:-6]
    with caplog.at_level(logging.WARNING, logger="sealbox.gateway.substitution"):
        result = substituter.body(body, b"gzip", "api.example.com", 443, tls=True)
    assert result.data is body
    assert result.substituted == ()
    assert "gzip" in caplog.text
    assert API_PLACEHOLDER not in caplog.text


def test_body_unsupported_untouched(substituter: Substituter, caplog: pytest.LogCaptureFixture) -> None:
    body = f"key={API_PLACEHOLDER}".encode()
    with caplog.at_level(logging.WARNING, logger="sealbox.gateway.substitution"):
        result = substituter.body(body, b"br", "api.example.com", 443, tls=True)
    assert result.data is body
    assert "'br'" in caplog.text


def test_body_large_identity(substituter: Substituter) -> None:
    filler = bytes(range(256)) * 65536  # 16 MiB
    body = API_PLACEHOLDER.encode() + filler + API_PLACEHOLDER.encode()
    result = substituter.body(body, b"identity", "api.example.com", 443, tls=True)
    assert result.data == API_VALUE.encode() + filler + API_VALUE.encode()


# Substituter: scan


def test_scan_literal(substituter: Substituter) -> None:
    assert substituter.scan(f"GET /?a={API_PLACEHOLDER} HTTP/1.1\r\nX: {GH_PLACEHOLDER}".encode()) == (
        "API_KEY",
        "GH_TOKEN",
    )


def test_scan_percent_encoded(substituter: Substituter) -> None:
    assert substituter.scan(b"GET /?t=" + escape_every_other(PLAIN_PLACEHOLDER) + b" HTTP/1.1") == ("PLAIN",)


def test_scan_percent_encoded_far_into_data(substituter: Substituter) -> None:
    data = b"%20" * 100_000 + escape_every_other(GH_PLACEHOLDER) + b"x%41" * 10_000
    assert substituter.scan(data) == ("GH_TOKEN",)


def test_scan_basic_credentials(substituter: Substituter) -> None:
    data = b"GET / HTTP/1.1\r\nAuthorization: " + basic(f"u:{GH_PLACEHOLDER}".encode()) + b"\r\n\r\n"
    assert substituter.scan(data) == ("GH_TOKEN",)


def test_scan_nothing(substituter: Substituter) -> None:
    assert substituter.scan(b"GET / HTTP/1.1\r\nAuthorization: Basic dTpw\r\n\r\n") == ()


def test_placeholders_present(substituter: Substituter) -> None:
    assert substituter.placeholders_present(GH_PLACEHOLDER.encode()) is True
    assert substituter.placeholders_present(escape_every_other(GH_PLACEHOLDER)) is True
    assert substituter.placeholders_present(b"Basic " + base64.b64encode(GH_PLACEHOLDER.encode())) is True
    assert substituter.placeholders_present(b"no placeholder here") is False


def test_substituter_requires_placeholder() -> None:
    with pytest.raises(ValueError, match="assign_placeholders"):
        Substituter([Secret.env("T", GH_VALUE, ["github.com"])])


# Properties


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_no_placeholder_passes_unchanged(data: bytes) -> None:
    substituter = Substituter([GH, API, PLAIN])
    assert substituter.header_value(b"Authorization", data, "github.com", 443, tls=True).data is data
    assert substituter.target(data, "github.com", 443, tls=True).data is data
    assert substituter.body(data, None, "api.example.com", 443, tls=True).data is data


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), st.just(GH_PLACEHOLDER.encode())), max_size=12))
def test_substitution_equals_replace(pieces: list[bytes]) -> None:
    data = b"".join(pieces)
    result = Substituter([GH]).header_value(b"X-Test", data, "github.com", 443, tls=True)
    assert result.data == data.replace(GH_PLACEHOLDER.encode(), GH_VALUE.encode())
