"""web_fetch's address filter judges the IPv4 address hidden in any IPv6 form; checked
without connecting anywhere."""

from __future__ import annotations

import pytest

from tools_app.builtin.web import is_public_address


@pytest.mark.parametrize(
    "address",
    [
        "169.254.169.254",
        "10.0.0.1",
        "127.0.0.1",
        "::1",
        "::ffff:169.254.169.254",  # IPv4-mapped
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b:1::a9fe:a9fe",  # local-use NAT64
        "::7f00:1",  # IPv4-compatible 127.0.0.1
        "::ffff:0:a9fe:a9fe",  # IPv4-translated (RFC 2765) 169.254.169.254
        "::ffff:0:10.0.0.1",  # IPv4-translated 10.0.0.1
        "::ffff:0:127.0.0.1",  # IPv4-translated 127.0.0.1
        "64:ff9b::10.0.0.1",  # NAT64 of 10.0.0.1
        "64:ff9b::c0a8:101",  # NAT64 of 192.168.1.1
        "2002:c0a8:0101::1",  # 6to4 of 192.168.1.1
        "2002:7f00:0001:1::1",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "2002:0a00:0001::1",  # 6to4 of 10.0.0.1
        "2001:0:4136:e378:8000:63bf:f5ff:fffe",  # Teredo, client 10.0.0.1
        "fd00::1",
        "fe80::1",
        "fec0::1",  # deprecated site-local (RFC 3879)
        "feff:ffff::1",  # the top of site-local's /10
        "ff02::1",
    ],
)
def test_it_refuses_private_addresses_in_any_form(address):
    assert not is_public_address(address)


@pytest.mark.parametrize(
    "address",
    ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "64:ff9b::5db8:d822"],
)
def test_it_allows_public_addresses_including_nat64_of_a_public_one(address):
    assert is_public_address(address)
