"""The benchmark's network: one Linux bridge, one network namespace per host, bandwidth limits.

Every host is a namespace with a veth pair: ``eth0`` inside, the peer on the bridge outside. A
token bucket (``tc tbf``) on ``eth0`` limits what the host sends; one on the bridge-side peer
limits what it receives (a qdisc shapes egress only, and the peer's egress is the host's
ingress). The addresses are a private /24 that exists only on this bridge, so several runs can
coexist: each has its own bridge and nothing routes between them.

All names start with :data:`PREFIX` and the run's id, which is how :func:`leftovers` finds what a
killed run left behind.
"""

from __future__ import annotations

import contextlib
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from imgaccel.testing.procs import run

#: Start of every namespace, link and work directory the benchmark creates.
PREFIX = "iab-"
SUBNET = "10.213.0"
WORKDIR_PREFIX = "imgaccel-bench-"


def new_run_id() -> str:
    return secrets.token_hex(2)


@dataclass(frozen=True)
class Host:
    """A network namespace on the bridge with an address and optional bandwidth limits."""

    name: str
    ip: str
    ingress_mbit: float | None
    egress_mbit: float | None

    @property
    def netns(self) -> str:
        return self.name


def tbf_args(mbit: float) -> list[str]:
    """``tc`` arguments for a token bucket of ``mbit`` Mbit/s.

    The bucket holds at least 64 KiB (one GSO super-packet must fit) or 10 ms at full rate; the
    queue holds 100 ms, enough for TCP to fill the pipe without bufferbloat.
    """
    rate_bytes = mbit * 1e6 / 8
    burst = max(64 * 1024, int(rate_bytes / 100))
    return ["tbf", "rate", f"{int(mbit * 1000)}kbit", "burst", str(burst), "latency", "100ms"]


@dataclass
class Network:
    """A bridge and the hosts on it; :meth:`close` removes everything :meth:`add_host` made."""

    run_id: str
    hosts: list[Host] = field(default_factory=list)
    _bridge_up: bool = False

    @property
    def bridge(self) -> str:
        return f"{PREFIX}{self.run_id}-br"

    def host_name(self, role: str) -> str:
        name = f"{PREFIX}{self.run_id}-{role}"
        if len(name) > 15:  # IFNAMSIZ - 1: the bridge-side veth carries the same name
            raise ValueError(f"host role {role!r} makes the interface name {name!r} too long")
        return name

    async def open(self) -> None:
        await run("ip", "link", "add", self.bridge, "type", "bridge")
        self._bridge_up = True
        await run("ip", "link", "set", self.bridge, "up")

    async def add_host(
        self,
        role: str,
        octet: int,
        *,
        ingress_mbit: float | None = None,
        egress_mbit: float | None = None,
    ) -> Host:
        host = Host(self.host_name(role), f"{SUBNET}.{octet}", ingress_mbit, egress_mbit)
        await run("ip", "netns", "add", host.netns)
        self.hosts.append(host)
        await run(
            "ip",
            "link",
            "add",
            host.name,
            "type",
            "veth",
            "peer",
            "name",
            "eth0",
            "netns",
            host.netns,
        )
        await run("ip", "link", "set", host.name, "master", self.bridge, "up")
        inside = ("ip", "-n", host.netns)
        await run(*inside, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        await run(*inside, "link", "set", "eth0", "up")
        await run(*inside, "link", "set", "lo", "up")
        if egress_mbit:
            await run(
                "tc",
                "-n",
                host.netns,
                "qdisc",
                "add",
                "dev",
                "eth0",
                "root",
                *tbf_args(egress_mbit),
            )
        if ingress_mbit:
            await run("tc", "qdisc", "add", "dev", host.name, "root", *tbf_args(ingress_mbit))
        return host

    async def tx_bytes(self, host: Host) -> int:
        """Bytes ``host`` has put on the wire (its ``eth0`` transmit counter)."""
        out = await run(
            "ip", "netns", "exec", host.netns, "cat", "/sys/class/net/eth0/statistics/tx_bytes"
        )
        return int(out.stdout)

    async def close(self) -> None:
        """Delete the namespaces (their veths go with them) and the bridge; never raises."""
        for host in reversed(self.hosts):
            # Deleting the bridge-side veth end takes the other end with it at once; a deleted
            # namespace would only release its veths when the kernel gets round to it.
            await run("ip", "link", "del", host.name, check=False)
            await run("ip", "netns", "del", host.netns, check=False)
        self.hosts.clear()
        if self._bridge_up:
            with contextlib.suppress(Exception):
                await run("ip", "link", "del", self.bridge, check=False)
            self._bridge_up = False


# -- leftovers of runs that could not clean up (SIGKILL, power loss) ---------------------------


@dataclass(frozen=True)
class Leftovers:
    namespaces: list[str]
    links: list[str]
    workdirs: list[Path]

    def __bool__(self) -> bool:
        return bool(self.namespaces or self.links or self.workdirs)


_NAME_RE = re.compile(rf"{PREFIX}([0-9a-f]{{4}})-\S+")
_WORKDIR_RE = re.compile(rf"{WORKDIR_PREFIX}([0-9a-f]{{4}})")


def _run_id_of(name: str) -> str | None:
    """The run id in one of our names, None for anyone else's (however similar)."""
    m = _NAME_RE.fullmatch(name) or _WORKDIR_RE.fullmatch(name)
    return m.group(1) if m else None


def _owner_alive(workdir: Path) -> bool:
    """Whether the process that made ``workdir`` still runs (a zombie does not)."""
    try:
        pid = int((workdir / "owner.pid").read_text())
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _workdirs(tmp: Path) -> list[Path]:
    """Our work directories: the exact name pattern, and the owner file every run writes."""
    return [
        p
        for p in tmp.glob(f"{WORKDIR_PREFIX}*")
        if _run_id_of(p.name) and (p / "owner.pid").is_file()
    ]


def _link_names(ip_o_link: str) -> list[str]:
    """Interface names from ``ip -o link show`` (``3: name@peer: <...>``)."""
    return [
        line.split(":")[1].strip().split("@")[0]
        for line in ip_o_link.splitlines()
        if line.count(":") >= 2
    ]


async def leftovers(tmp: Path) -> Leftovers:
    """What benchmark runs whose owner process is gone left on this machine."""
    workdirs = _workdirs(tmp)
    live = {_run_id_of(p.name) for p in workdirs if _owner_alive(p)}
    ns_out = await run("ip", "netns", "list", check=False)
    namespaces = [
        line.split()[0] for line in ns_out.stdout.decode().splitlines() if line.startswith(PREFIX)
    ]
    link_out = await run("ip", "-o", "link", "show", check=False)
    links = [name for name in _link_names(link_out.stdout.decode()) if name.startswith(PREFIX)]

    def dead(name: str) -> bool:
        run_id = _run_id_of(name)
        return run_id is not None and run_id not in live

    return Leftovers(
        [n for n in namespaces if dead(n)],
        [name for name in links if dead(name)],
        [p for p in workdirs if dead(p.name)],
    )


async def namespace_pids(netns: str) -> list[int]:
    out = await run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in out.stdout.decode().split()]
