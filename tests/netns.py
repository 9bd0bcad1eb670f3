"""Network namespaces a test makes and removes: hosts, switches (one bridge each: a LAN or "the
Internet"), NAT gateways (nft masquerade), links between them. Traffic stays inside them.

Every name starts with the test's own prefix (the process id in it), so tests running at the same
time never touch each other's namespaces; ``Netns.close`` deletes every namespace the object made
(which deletes their links and bridges with them). Needs root, ``ip`` (iproute2) and ``nft``
(nftables): ``missing()`` names what is absent; ``require()`` fails a test under ``CI=true`` and skips
it elsewhere.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

#: Seconds any one ``ip``/``nft`` command may take.
COMMAND_TIMEOUT = 20.0

_counter = itertools.count()


def missing() -> str | None:
    """What this machine lacks to make namespaces (``None``: nothing)."""
    if os.geteuid() != 0:
        return "root (network namespaces need CAP_SYS_ADMIN)"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None:
            return f"{tool} (Debian package {package})"
    probe = f"mcprobe{os.getpid()}"
    made = subprocess.run(
        ["ip", "netns", "add", probe], check=False, capture_output=True, timeout=COMMAND_TIMEOUT
    )
    if made.returncode != 0:
        return "ip netns add: " + made.stderr.decode(errors="replace").strip()
    subprocess.run(["ip", "netns", "del", probe], check=False, capture_output=True, timeout=COMMAND_TIMEOUT)
    return None


def require() -> None:
    """Skip the calling test off CI if namespaces cannot be made here; fail it under ``CI=true``."""
    reason = missing()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"network namespaces need {reason}")
    pytest.skip(f"network namespaces need {reason}")


@dataclass
class Netns:
    """Namespaces made by one test. Use ``with netns_made() as net:``."""

    prefix: str
    #: Full names of the namespaces made so far, in order.
    made: list[str] = field(default_factory=list)
    _links: itertools.count[int] = field(default_factory=itertools.count)

    def name(self, short: str) -> str:
        """The full name of this test's namespace ``short``."""
        return f"{self.prefix}-{short}"

    def run(self, namespace: str | None, *argv: str) -> str:
        """Run ``argv`` in ``namespace`` (``None``: the root namespace); return its output; raise
        ``RuntimeError`` with its error output if it fails."""
        command = list(argv) if namespace is None else ["ip", "netns", "exec", self.name(namespace), *argv]
        done = subprocess.run(command, check=False, capture_output=True, timeout=COMMAND_TIMEOUT)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)}: {done.stderr.decode(errors='replace').strip()}")
        return done.stdout.decode()

    def argv(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``namespace`` (for ``trio.lowlevel.open_process``: the process's PID is
        the program's own, ``ip netns exec`` execs it)."""
        return ["ip", "netns", "exec", self.name(namespace), *argv]

    def host(self, short: str) -> str:
        """Make namespace ``short`` with its loopback up; return ``short``."""
        full = self.name(short)
        self.run(None, "ip", "netns", "add", full)
        self.made.append(full)
        self.run(short, "ip", "link", "set", "lo", "up")
        return short

    def switch(self, short: str) -> str:
        """Make namespace ``short`` holding one bridge ``br0`` (a LAN, or the public Internet)."""
        self.host(short)
        self.run(short, "ip", "link", "add", "br0", "type", "bridge")
        self.run(short, "ip", "link", "set", "br0", "up")
        return short

    def link(
        self, a: str, a_address: str, b: str, b_address: str | None = None, *, bridge: bool = False
    ) -> tuple[str, str]:
        """A veth pair between namespaces ``a`` and ``b``; ``a_address`` (CIDR, e.g. ``10.1.0.2/24``) on
        ``a``'s end; ``b_address`` on ``b``'s, or with ``bridge=True`` ``b``'s end joins ``b``'s
        ``br0`` (``b`` is a switch). Returns the two interface names (``a``'s, ``b``'s)."""
        number = next(self._links)
        a_if, b_if = f"v{number}a", f"v{number}b"
        self.run(
            None,
            "ip", "link", "add", a_if, "netns", self.name(a),
            "type", "veth", "peer", "name", b_if, "netns", self.name(b),
        )  # fmt: skip
        self.run(a, "ip", "addr", "add", a_address, "dev", a_if)
        self.run(a, "ip", "link", "set", a_if, "up")
        if bridge:
            self.run(b, "ip", "link", "set", b_if, "master", "br0")
        elif b_address is not None:
            self.run(b, "ip", "addr", "add", b_address, "dev", b_if)
        self.run(b, "ip", "link", "set", b_if, "up")
        return a_if, b_if

    def unlink(self, namespace: str, interface: str) -> None:
        """Delete the veth pair ``interface`` of ``namespace`` belongs to (a cable pulled out)."""
        self.run(namespace, "ip", "link", "del", interface)

    def route(self, namespace: str, via: str) -> None:
        """The default route of ``namespace`` goes through ``via`` (an address on a shared link)."""
        self.run(namespace, "ip", "route", "add", "default", "via", via)

    def nat_gateway(self, namespace: str, outside: str, *, fully_random: bool = False) -> None:
        """Make ``namespace`` a NAT gateway: forwards, masquerades what leaves by interface ``outside``
        (ports kept where free; ``fully_random``: a random port for every connection, which defeats
        hole punching) and lets in from ``outside`` only what answers a connection made from inside."""
        self.run(namespace, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        masquerade = "masquerade fully-random" if fully_random else "masquerade"
        rules = f"""
table ip nat {{
    chain post {{ type nat hook postrouting priority 100; oifname "{outside}" {masquerade}; }}
}}
table ip filter {{
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname != "{outside}" accept
    }}
}}
"""
        self._nft(namespace, rules)

    def _nft(self, namespace: str, rules: str) -> None:
        command = ["ip", "netns", "exec", self.name(namespace), "nft", "-f", "-"]
        done = subprocess.run(
            command, input=rules.encode(), check=False, capture_output=True, timeout=COMMAND_TIMEOUT
        )
        if done.returncode != 0:
            raise RuntimeError(f"nft in {namespace}: {done.stderr.decode(errors='replace').strip()}")

    def close(self) -> None:
        """Delete every namespace this object made (their links and bridges go with them)."""
        for full in reversed(self.made):
            subprocess.run(
                ["ip", "netns", "del", full], check=False, capture_output=True, timeout=COMMAND_TIMEOUT
            )
        self.made.clear()


@contextmanager
def netns_made(tag: str = "t") -> Iterator[Netns]:
    """Namespaces for one test, all deleted when the block ends (even on failure). Calls ``require()``."""
    require()
    net = Netns(prefix=f"mc{os.getpid()}{tag}{next(_counter)}")
    try:
        yield net
    finally:
        net.close()


# --- two hosts, each behind its own NAT gateway, and a public switch ---------------


@dataclass(frozen=True)
class NatPair:
    """``two_nats``' namespaces and addresses: ``relay`` on the public switch, ``a`` and ``b`` each
    behind its own gateway (``gw_a``, ``gw_b``)."""

    relay: str
    relay_ip: str
    a: str
    a_ip: str
    a_public_ip: str
    b: str
    b_ip: str
    b_public_ip: str


def drop_unsolicited(net: Netns, namespace: str, outside: str) -> None:
    """Make gateway ``namespace`` drop (not refuse) connections from ``outside`` to itself, as home
    routers do: ``nat_gateway``'s forward filter drops unsolicited packets it would forward, but a SYN
    to a port of the gateway's own that no conntrack entry maps to a host inside reaches the
    gateway's own stack, which answers with a reset; that reset kills the other side's hole-punch dial
    (ECONNREFUSED) and, passing through its NAT, the conntrack entry that dial made."""
    rules = f"""
table ip stealth {{
    chain input {{
        type filter hook input priority 0; policy accept;
        iifname "{outside}" ct state new drop
    }}
}}
"""
    net._nft(namespace, rules)


def two_nats(net: Netns, *, fully_random: bool = False) -> NatPair:
    """A "public" switch with a relay host (203.0.113.1) and two NAT gateways (203.0.113.2, .3), a
    private host behind each (10.1.0.2 behind .2, 10.2.0.2 behind .3). ``fully_random``: both gateways
    map every connection to a random port (hole punching fails)."""
    public = net.switch("pub")
    relay = net.host("relay")
    net.link(relay, "203.0.113.1/24", public, bridge=True)
    hosts = []
    for side, number in (("a", 1), ("b", 2)):
        gateway = net.host(f"gw{side}")
        outside, _ = net.link(gateway, f"203.0.113.{number + 1}/24", public, bridge=True)
        host = net.host(side)
        net.link(host, f"10.{number}.0.2/24", gateway, f"10.{number}.0.1/24")
        net.route(host, f"10.{number}.0.1")
        net.nat_gateway(gateway, outside, fully_random=fully_random)
        drop_unsolicited(net, gateway, outside)
        hosts.append((host, f"10.{number}.0.2", f"203.0.113.{number + 1}"))
    (a, a_ip, a_public), (b, b_ip, b_public) = hosts
    return NatPair(relay, "203.0.113.1", a, a_ip, a_public, b, b_ip, b_public)
