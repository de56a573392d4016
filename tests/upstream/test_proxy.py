"""Which proxy an origin request goes through (imgaccel/upstream/proxy.py), without sockets:
the environment's rules as containerd applies them (Go's ``httpproxy``), an upstream's own
``proxy`` setting, and the errors for proxies that cannot be used.

Pulls through a real proxy (tinyproxy) are in tests/upstream/test_proxy_origin.py.
"""

from __future__ import annotations

import pytest
from yarl import URL

from imgaccel.errors import ConfigError
from imgaccel.settings import load_settings
from imgaccel.upstream.config import UpstreamSettings
from imgaccel.upstream.proxy import Environment, Proxies, Proxy

CORP = "http://proxy.corp:3128"
ENV = {"HTTPS_PROXY": CORP, "HTTP_PROXY": "http://plain.corp:8080"}


@pytest.mark.parametrize(
    ("url", "no_proxy", "expected"),
    [
        ("https://registry-1.docker.io/v2/", "", CORP),
        ("http://harbor.lan:5000/v2/", "", "http://plain.corp:8080"),
        # Never through the environment's proxy: loopback, by name or address.
        ("http://127.0.0.1:5000/v2/", "", None),
        ("http://127.9.9.9:5000/v2/", "", None),
        ("https://[::1]:5000/v2/", "", None),
        ("https://localhost/v2/", "", None),
        ("https://LOCALHOST./v2/", "", None),
        # NO_PROXY: a domain covers itself and its subdomains, ".domain" its subdomains only.
        ("https://nvcr.io/v2/", "nvcr.io", None),
        ("https://a.b.nvcr.io/v2/", "nvcr.io", None),
        ("https://notnvcr.io/v2/", "nvcr.io", CORP),
        ("https://nvcr.io/v2/", ".nvcr.io", CORP),
        ("https://cdn.nvcr.io/v2/", ".nvcr.io", None),
        ("https://cdn.nvcr.io/v2/", "*.nvcr.io", None),
        ("https://NVCR.IO./v2/", "nvcr.io", None),
        ("https://nvcr.io/v2/", " quay.io , NVCR.io ", None),
        # Addresses and CIDR blocks, as Kubernetes clusters list them.
        ("https://10.1.2.3/v2/", "10.0.0.0/8", None),
        ("https://11.1.2.3/v2/", "10.0.0.0/8", CORP),
        ("https://192.168.1.5:5000/v2/", "192.168.1.5", None),
        ("https://[fd00::5]/v2/", "fd00::/8", None),
        # With a port: only that port.
        ("https://harbor.lan:8443/v2/", "harbor.lan:8443", None),
        ("https://harbor.lan/v2/", "harbor.lan:8443", CORP),
        ("https://[fd00::5]:5000/v2/", "[fd00::5]:5000", None),
        ("https://quay.io/v2/", "*", None),
        ("https://quay.io/v2/", ",,", CORP),
    ],
)
def test_the_environment_names_a_proxy_for_a_url_as_containerd_does(
    url: str, no_proxy: str, expected: str | None
) -> None:
    environment = Environment.read({**ENV, "NO_PROXY": no_proxy})
    proxy = environment.proxy_for(URL(url))
    assert (str(proxy) if proxy else None) == expected


def test_upper_case_names_win_and_lower_case_ones_are_read_too() -> None:
    both = Environment.read({"HTTPS_PROXY": CORP, "https_proxy": "http://other:1"})
    assert str(both.https) == CORP
    lower = Environment.read({"https_proxy": "proxy.corp:3128", "no_proxy": "quay.io"})
    assert str(lower.https) == CORP  # no scheme: http://
    assert lower.proxy_for(URL("https://quay.io/v2/")) is None
    assert lower.proxy_for(URL("http://quay.io/v2/")) is None  # no HTTP_PROXY: directly


def test_an_https_origin_does_not_fall_back_to_http_proxy() -> None:
    environment = Environment.read({"HTTP_PROXY": CORP})
    assert environment.proxy_for(URL("https://nvcr.io/v2/")) is None
    assert str(environment.proxy_for(URL("http://harbor.lan/v2/"))) == CORP


def test_credentials_are_used_and_never_shown() -> None:
    proxy = Proxy.parse("http://us%40er:p%3Ass@proxy.corp:3128", "HTTPS_PROXY")
    assert (proxy.username, proxy.password) == ("us@er", "p:ss")
    # base64 of us@er:p:ss
    assert proxy.headers == {"Proxy-Authorization": "Basic dXNAZXI6cDpzcw=="}
    assert str(proxy) == CORP
    assert "p:ss" not in repr(proxy)
    environment = Environment.read({"HTTPS_PROXY": "http://user:secret@proxy.corp:3128"})
    assert "secret" not in (environment.describe() or "")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("https://proxy.corp:3128", "only http:// proxies"),
        ("socks5://proxy.corp:1080", "only http:// proxies"),
        ("http://proxy.corp:3128/path", "not a proxy URL: a proxy URL is http://"),
        ("http://:3128", "not a proxy URL .*host is required"),
        ("http://proxy.corp:99999", "not a proxy URL"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_refused_naming_where_it_came_from(
    value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="HTTPS_PROXY: " + message):
        Environment.read({"HTTPS_PROXY": value})


def test_an_upstream_setting_is_checked_with_the_settings_without_echoing_it() -> None:
    upstream = {"r.example": {"url": "https://r.example", "proxy": "https://u:secret@h:1"}}
    with pytest.raises(ConfigError, match="only http:// proxies") as raised:
        load_settings(None, upstreams=upstream)
    assert "secret" not in str(raised.value)  # the settings' errors never show values


def test_an_upstream_setting_beats_the_environment_and_direct_beats_both() -> None:
    proxies = Proxies(Environment.read({"HTTPS_PROXY": CORP}))
    url = URL("https://nvcr.io/v2/")
    own = UpstreamSettings(url="https://nvcr.io", proxy="http://own.proxy:8080")
    assert str(proxies.for_url(url, own)) == "http://own.proxy:8080"
    # An explicit proxy is used for loopback origins too: the operator named it for this one.
    assert str(proxies.for_url(URL("http://127.0.0.1:5000/v2/"), own)) == "http://own.proxy:8080"
    direct = UpstreamSettings(url="https://nvcr.io", proxy="Direct")
    assert proxies.for_url(url, direct) is None
    unset = UpstreamSettings(url="https://nvcr.io")
    assert str(proxies.for_url(url, unset)) == CORP
    assert Proxies().for_url(url, unset) is None  # proxy_from_environment = false
