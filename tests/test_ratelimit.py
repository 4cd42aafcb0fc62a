"""The token buckets and the limits' settings, as tables (the hub endpoints are tested
against a real hub in tests/hub/test_rate_limits.py)."""

from __future__ import annotations

import pytest
from traitlets.config import Config

from hub_ext.ratelimit import Buckets, Reports, RequestLimits


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_a_bucket_gives_its_burst_then_refills_at_its_rate():
    clock = Clock()
    buckets = Buckets(rate=2.0, burst=3, max_keys=10, now=clock)
    assert [buckets.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take("a") == pytest.approx(0.5)  # one token comes in 1/rate seconds
    assert buckets.take("b") == 0.0  # other keys are not affected
    clock.t += 0.5
    assert buckets.take("a") == 0.0
    clock.t += 100  # never more than the burst
    assert [buckets.take("a") for _ in range(4)][-1] > 0


def test_unknown_keys_are_not_created_on_request_and_the_table_is_bounded():
    buckets = Buckets(rate=1.0, burst=1, max_keys=3, now=Clock())
    assert buckets.take("x", create=False) is None and len(buckets) == 0
    for key in "abcde":
        buckets.take(key)
    assert len(buckets) == 3
    assert buckets.take("a", create=False) is None  # the least recently used went first


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("per_token_rate", 0, "per_token_rate must be a positive number"),
        ("per_ip_rate", float("nan"), "per_ip_rate must be a positive number"),
        ("per_token_burst", 0, "per_token_burst must be at least 1"),
        ("max_tracked", -5, "max_tracked must be at least 1"),
        ("write_threads", 64, "write_threads must be between 1 and 16"),
        ("refusal_delay", 60, "refusal_delay must be between 0 and 10"),
        ("max_delayed", 0, "max_delayed must be at least 1"),
        ("login_rate", -1, "login_rate must be a positive number"),
        ("login_burst", 0, "login_burst must be at least 1"),
        ("login_audit_every", 0, "login_audit_every = 0: use 1 to 86400 seconds"),
        ("trusted_proxy_ips", ["127.0.0.1", "proxy.local"], "trusted_proxy_ips[1] is not an IP"),
    ],
)
def test_bad_settings_are_refused_with_what_to_set(setting, value, message):
    config = Config()
    config.RequestLimits[setting] = value
    with pytest.raises(Exception, match=message.replace("[", r"\[").replace("]", r"\]")):
        RequestLimits(config=config)


def test_a_token_gets_its_own_bucket_only_once_it_authenticated():
    limits = RequestLimits(per_token_burst=2, per_ip_burst=3, per_ip_rate=0.001)
    try:
        # made-up tokens are charged to the address
        assert [limits.check("10.0.0.1", f"t{i}") for i in range(3)] == [None] * 3
        refused = limits.check("10.0.0.1", "t3")
        assert refused is not None and refused.status == 429 and refused.retry_after >= 1
        assert "address 10.0.0.1" in refused.message
        # a server token that authenticated is charged to itself, whatever its address
        limits.authenticated("server-token")
        limits.authenticated("server-token")  # again: nothing taken
        assert limits.check("10.0.0.1", "server-token") is None
        assert limits.check("10.0.0.1", "server-token") is None
        refused = limits.check("10.0.0.1", "server-token")
        assert refused is not None and "this token" in refused.message
        assert "server-token" not in refused.message
    finally:
        limits.close()


class _Context:
    """What tornado's connection context gives a request: the peer's address."""

    protocol = "http"

    def __init__(self, address: str) -> None:
        self.address = (address, 40000)
        self.remote_ip = address


class _Connection:
    def __init__(self, address: str) -> None:
        self.context = _Context(address)


def _request(peer: str, forwarded: str | None):
    from tornado.httputil import HTTPHeaders, HTTPServerRequest, RequestStartLine

    headers = HTTPHeaders({"Host": "hub.example"})
    if forwarded is not None:
        headers["X-Forwarded-For"] = forwarded
    return HTTPServerRequest(
        start_line=RequestStartLine("POST", "/", "HTTP/1.1"),
        headers=headers,
        connection=_Connection(peer),
    )


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("10.9.9.9", "1.2.3.4", "10.9.9.9"),  # not through a proxy: the header is ignored
        ("127.0.0.1", "198.18.7.5", "198.18.7.5"),  # the public proxy's entry
        # a container through the network proxy and the public proxy: its own address,
        # not the loopback hop every container shares
        ("127.0.0.1", "198.18.7.5, 127.0.0.1", "198.18.7.5"),
        # what the client wrote itself stays left of the entries the proxies appended
        ("127.0.0.1", "127.0.0.1, 6.6.6.6, 198.18.7.5, 127.0.0.1", "198.18.7.5"),
        ("127.0.0.1", "not-an-address, 127.0.0.1", "127.0.0.1"),
        ("127.0.0.1", None, "127.0.0.1"),
    ],
)
def test_the_client_address_is_the_nearest_untrusted_hop(peer, forwarded, expected):
    assert RequestLimits().client_ip(_request(peer, forwarded)) == expected


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("token abc123", "abc123"),
        ("Bearer abc123", "abc123"),
        ("token\tabc123", "abc123"),  # JupyterHub accepts any white space: so do the limits
        ("token   abc123  ", "abc123"),
        ("basic abc123", None),
        ("tokenabc123", None),
    ],
)
def test_the_limits_read_the_authorization_header_as_jupyterhub_does(header, token):
    from hub_ext.ratelimit import _AUTH_HEADER

    match = _AUTH_HEADER.match(header)
    assert (match.group(1) if match else None) == token


def test_login_requests_have_their_own_buckets_per_address():
    limits = RequestLimits(login_burst=2, login_rate=0.001, per_ip_burst=1, per_ip_rate=0.001)
    try:
        assert [limits.check_login("10.0.0.1") for _ in range(2)] == [None, None]
        refused = limits.check_login("10.0.0.1")
        assert refused is not None and refused.status == 429 and refused.retry_after >= 1
        assert "(10.0.0.1)" in refused.message and "login_burst" in refused.message
        assert limits.check_login("10.0.0.2") is None  # another address
        assert limits.check("10.0.0.1", "") is None  # the server endpoints' bucket is apart
    finally:
        limits.close()


def test_an_ipv6_client_is_charged_by_its_slash_64():
    # one host holds a whole /64: a bucket per address would give it 2**64 bursts
    limits = RequestLimits(login_burst=1, login_rate=0.001)
    try:
        assert limits.check_login("2001:db8:1:2::1") is None
        assert limits.check_login("2001:db8:1:2:ffff::9") is not None  # same /64
        assert limits.check_login("2001:db8:1:3::1") is None  # the next /64
        assert limits.check_login("::ffff:10.0.0.7") is None
        assert limits.check_login("10.0.0.7") is not None  # the same IPv4 client
    finally:
        limits.close()


def test_refusals_are_reported_once_per_period_with_a_count():
    clock = Clock()
    reports = Reports(every=60, max_keys=2, now=clock)
    assert reports.refused("a") == 1  # the first at once
    assert [reports.refused("a") for _ in range(5)] == [0] * 5
    clock.t += 60
    assert reports.refused("a") == 6  # the five counted, and this one
    assert reports.refused("a") == 0
    assert reports.refused("b") == 1 and reports.refused("c") == 1  # "a" dropped (LRU)
    assert reports.refused("a") == 1


def test_default_login_limits_let_a_class_behind_one_nat_in_and_cut_a_flood_down():
    defaults = RequestLimits()
    defaults.close()
    clock = Clock()
    logins = Buckets(defaults.login_rate, defaults.login_burst, defaults.max_tracked, now=clock)
    # 100 people sign in within a minute from one address: a login and a callback each,
    # half of them in the first second
    admitted = 0
    for person in range(100):
        clock.t = 1000.0 + (person * 0.02 if person < 50 else 1 + (person - 50) * 1.2)
        admitted += logins.take("nat") == 0.0
        admitted += logins.take("nat") == 0.0
    assert admitted == 200
    # a flood of 10,000 requests in the next ten seconds from one address
    flood = 0
    for i in range(10_000):
        clock.t = 1100.0 + i / 1000
        flood += logins.take("flooder") == 0.0
    assert flood <= defaults.login_burst + 10 * defaults.login_rate + 1
