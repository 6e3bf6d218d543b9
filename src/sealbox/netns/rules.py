"""nftables rules for a sandbox's loopback-only network namespace.

Inside the namespace the only interface is `lo` and the default routes point
at it, so every packet the sandbox sends is looped back. The `output` hooks
then decide: traffic to the sandbox's own loopback addresses stays local; DNS
(UDP and TCP port 53, any address) is redirected to the gateway's DNS server;
every other TCP connection is redirected to the gateway's listener, which
recovers the original destination with SO_ORIGINAL_DST; everything else
(other UDP, ICMP, raw IP) is dropped.
"""

from __future__ import annotations

GATEWAY_PORT = 15001
DNS_PORT = 53
TABLE = "sealbox"


def ruleset(gateway_port: int = GATEWAY_PORT, dns_port: int = DNS_PORT) -> str:
    """Return the `nft -f` script for the namespace."""
    return f"""\
table inet {TABLE} {{
    chain nat_output {{
        type nat hook output priority -100; policy accept;
        meta l4proto {{ tcp, udp }} th dport 53 ip daddr != 127.0.0.1 redirect to :{dns_port}
        meta l4proto {{ tcp, udp }} th dport 53 ip6 daddr != ::1 redirect to :{dns_port}
        ip daddr 127.0.0.0/8 return
        ip6 daddr ::1 return
        meta l4proto tcp redirect to :{gateway_port}
    }}
    chain filter_output {{
        type filter hook output priority 0; policy drop;
        ip daddr 127.0.0.0/8 accept
        ip6 daddr ::1 accept
    }}
}}
"""
