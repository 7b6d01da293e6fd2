"""Run the real server in a subprocess and talk to it over real sockets."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from cluster.nats import free_nats_base, free_ports

ROOT = Path(__file__).resolve().parent.parent
# Test accounts: created before the server starts (a cheap hash: tests log in often),
# funded through the admin channel once it listens (refs make that idempotent).
ACCOUNTS = [f"t{i}" for i in range(1, 13)]
PASSWORD = "pw"
FUNDS = [("USD", "10000000"), ("AAPL", "1000000"), ("BTC", "1000"), ("ES", "100000"), ("EUR", "100000000")]
# The refusal past --max-open-orders 3 for t1, word for word (serve and cluster alike).
CAPPED = "REJ too_many_orders t1 has 3 open orders, as many as one account may have; cancel some first"


def create_accounts(data_dir: Path, names: list[str] = ACCOUNTS) -> None:
    from journal.accounts import AccountAdmin

    admin = AccountAdmin(data_dir / "accounts.sqlite")
    try:
        have = {row.name for row in admin.list()}
        for name in names:
            if name not in have:
                admin.add(name, PASSWORD, cost=2**4)
    finally:
        admin.close()


def fund(data_dir: Path, names: list[str] = ACCOUNTS, funds: list[tuple[str, str]] = FUNDS) -> list[str]:
    from netio.unix_lines import send_lines

    lines = [f"DEPOSIT {name} {asset} {amount} fund:{name}:{asset}" for name in names for asset, amount in funds]
    return send_lines(data_dir / "admin.sock", lines)


def tickline_cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The command line as an operator runs it (env: variables added to this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "tickline.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=120, input=stdin,
        env=None if env is None else {**os.environ, **env},
    )  # fmt: skip


class Server:
    """`tickline serve` on a free port with its own data directory."""

    started: list[Server | Cluster] = []  # this test's servers and clusters: a failed test shows their logs (conftest.py)

    def __init__(self, data_dir: Path, *extra: str, funded: bool = True, module: str = "tickline.cli") -> None:
        self.data_dir = data_dir
        self.extra = extra
        self.module = module  # (tests.faulty_server: the same server with a fault to inject)
        self.funded = funded  # test accounts t1..t12 exist and hold FUNDS
        self._next_account = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.md_port = 0
        self.web_port = 0
        self.log: list[str] = []

    def log_tail(self, n: int = 40) -> list[tuple[str, str]]:
        """The last n lines the server logged since its last start, for a failed test's report."""
        return [(f"server log ({self.data_dir}), last lines", "\n".join(self.log[-n:]))]

    def start(self, timeout: float = 15.0) -> Server:
        if self.funded:
            create_accounts(self.data_dir)
        cmd = [sys.executable, "-m", self.module, "serve", "--port", "0", "--md-port", "0", "--web-port", "0", "--data-dir", str(self.data_dir)]
        cmd += ["--log-recovered-state", *self.extra]  # (the recovery tests compare it with a full replay)
        self.log = []
        if self not in Server.started:
            Server.started.append(self)
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ready = threading.Event()

        def pump() -> None:
            assert self.proc and self.proc.stderr
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip("\n")
                self.log.append(line)
                md = re.search(r"event='market_data_listening' .*port=(\d+)", line)
                if md:
                    self.md_port = int(md.group(1))
                web = re.search(r"event='dashboard_listening' .*port=(\d+)", line)
                if web:
                    self.web_port = int(web.group(1))
                m = re.search(r"event='order_entry_listening' .*port=(\d+)", line)
                if m:
                    self.port = int(m.group(1))
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("server did not start:\n" + "\n".join(self.log))
        if self.funded:
            replies = fund(self.data_dir)  # (an instruments file of the test's may trade fewer assets)
            assert all(r.startswith(("OK", "ERR unknown_asset")) for r in replies), replies
        return self

    def client(self, account: str | None = None) -> Client:
        """A connection logged in as `account`, or as the next test account (each call
        another one, so that two clients can trade with each other)."""
        if account is None:
            account = ACCOUNTS[self._next_account % len(ACCOUNTS)]
            self._next_account += 1
        client = Client(self.port)
        client.login(account)
        return client

    def subscriber(self) -> Client:
        return Client(self.md_port)

    def stop(self, timeout: float = 10.0) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def logged(self, event: str, timeout: float = 15.0) -> str:
        """The first log line of an event, waiting for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = [line for line in self.log if f"event='{event}'" in line]
            if found:
                return found[0]
            time.sleep(0.02)
        raise AssertionError(f"no {event} in the log:\n" + "\n".join(self.log[-20:]))

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def rss_kib(self) -> int:
        assert self.proc
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")


class Client:
    """A line client with a read buffer; every read has a deadline."""

    def __init__(self, port: int, greet: bool = True, source: str | None = None) -> None:
        # source: another loopback address (127.0.0.2...) to connect from: another client address
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=None if source is None else (source, 0))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.hello = self.line() if greet else ""
        self.owner = ""  # the account, once logged in

    def login(self, account: str, password: str = PASSWORD, cancel_on_disconnect: bool = False) -> str:
        reply = self.ask(f"LOGIN {account} {password}" + (" cancel_on_disconnect" if cancel_on_disconnect else ""))[0]
        assert reply.startswith(f"LOGGED_IN account={account} "), reply
        self.owner = account
        return reply

    def send(self, data: bytes | str) -> None:
        self.sock.sendall(data.encode() if isinstance(data, str) else data)

    def line(self, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line within {timeout}s; have {self.buf[:200]!r}")
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(1 << 20)
            except TimeoutError:
                raise TimeoutError(f"no line within {timeout}s; have {self.buf[:200]!r}") from None
            if not chunk:
                raise EOFError(f"connection closed; have {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode()

    def lines(self, n: int, timeout: float = 10.0) -> list[str]:
        out: list[str] = []
        try:
            while len(out) < n:
                out.append(self.line(timeout))
        except (TimeoutError, EOFError) as exc:  # (say what did come: "no 2nd line" after an ERR reads differently)
            raise type(exc)(f"{len(out)} of {n} lines came: {out!r}; {exc}") from None
        return out

    def until(self, last: str, timeout: float = 10.0) -> list[str]:
        out = []
        while True:
            out.append(self.line(timeout))
            if out[-1] == last:
                return out

    def ask(self, request: str, n: int = 1) -> list[str]:
        self.send(request + "\n")
        return self.lines(n)

    def quiet(self, wait: float = 0.3) -> bool:
        """True if nothing more arrives within `wait` seconds."""
        if self.buf:
            return False
        self.sock.settimeout(wait)
        try:
            chunk = self.sock.recv(1 << 16)
        except TimeoutError:
            return True
        self.buf += chunk
        return False

    def closed(self, timeout: float = 5.0) -> bool:
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(1 << 16)
                if not chunk:
                    return True
                self.buf += chunk
        except (TimeoutError, ConnectionResetError):
            return False

    def close(self) -> None:
        self.sock.close()


class Cluster:
    """`tickline cluster up` in its own directory on free ports: 3 NATS nodes and the roles."""

    def __init__(self, directory: Path, *options: str, supervise: bool = False) -> None:
        self.dir = directory
        # (unsupervised unless asked: most tests kill a role and decide themselves when it comes back)
        self.options = options if supervise else (*options, "--no-supervise")
        self.port, self.md_port = free_ports(2)
        self.nats_port = free_nats_base((self.port, self.md_port))

    def log_tail(self, n: int = 40) -> list[tuple[str, str]]:
        """Each role's log, its last n lines, for a failed test's report."""
        logs = sorted(self.dir.glob("*.log"))
        return [(f"cluster {log.name} ({self.dir}), last lines", "\n".join(log.read_text(errors="replace").splitlines()[-n:])) for log in logs]

    def start(self, funded: list[str] = ACCOUNTS) -> Cluster:
        if self not in Server.started:
            Server.started.append(self)
        create_accounts(self.dir, funded)
        self.up()
        self.fund(funded)
        return self

    def up(self) -> None:
        self._cli("up", "--port", str(self.port), "--md-port", str(self.md_port), "--nats-port", str(self.nats_port), *self.options)

    def fund(self, names: list[str], funds: list[tuple[str, str]] = FUNDS) -> None:
        """The same deposits, in the same order, as Server.start's."""
        from tickline.cluster import ClusterConfig, transfers

        moves = [[name, asset, amount, f"fund:{name}:{asset}"] for name in names for asset, amount in funds]
        replies = asyncio.run(transfers(ClusterConfig.load(self.dir), moves))
        assert all(r.startswith("OK") for r in replies), replies

    def transfers(self, moves: list[list[str]]) -> list[str]:
        """`tickline cluster deposits`: one line of words each, a reply line each."""
        stdin = "".join(" ".join(words) + "\n" for words in moves)
        run = tickline_cli("cluster", "deposits", "--dir", str(self.dir), stdin=stdin)
        lines = run.stdout.splitlines()
        assert len(lines) == len(moves) and run.returncode == (0 if all(line.startswith("OK") for line in lines) else 1), run
        return lines

    def transfer(self, account: str, asset: str, amount: str, ref: str) -> str:
        """`tickline cluster deposit` (a negative amount withdraws)."""
        run = tickline_cli("cluster", "deposit", account, asset, amount, "--ref", ref, "--dir", str(self.dir))
        assert run.returncode == (0 if run.stdout.startswith("OK") else 1), run
        return run.stdout.rstrip("\n")

    def _cli(self, *args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "tickline.cli", "cluster", *args, "--dir", str(self.dir)], cwd=ROOT, capture_output=True, timeout=120)
        assert done.returncode == 0, done.stderr.decode()[-3000:]
        return done.stdout.decode()

    def pids(self) -> dict[tuple[str, int], int]:
        out = {}
        for line in (self.dir / "pids").read_text().splitlines():
            pid, role, index = line.split()
            out[(role, int(index))] = int(pid)
        return out

    def kill(self, role: str, index: int = 0) -> None:
        """kill -9 one process."""
        import os

        os.kill(self.pids()[(role, index)], signal.SIGKILL)

    def restart(self, role: str, index: int = 0) -> None:
        """Start a killed role again (what a supervisor would do) and note its new pid."""
        from cluster.nats import server_binary
        from tickline.cluster import start_role

        pids = self.pids()
        log = self.dir / f"{role}-{index}.log"
        before = log.read_text(errors="replace").count("_listening") if log.exists() else 0
        if role == "nats":
            out = open(self.dir / "nats" / f"n{index + 1}.log", "ab")
            conf = self.dir / "nats" / f"n{index + 1}.conf"
            proc = subprocess.Popen([str(server_binary()), "-c", str(conf)], stdout=out, stderr=out, start_new_session=True)
            out.close()
        else:
            proc = start_role(self.dir, role, index)
        pids[(role, index)] = proc.pid
        (self.dir / "pids").write_text("".join(f"{pid} {r} {i}\n" for (r, i), pid in pids.items()))
        if role in ("gateway", "notifier"):
            deadline = time.monotonic() + 60
            while log.read_text(errors="replace").count("_listening") == before:
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.05)

    def client(self, account: str) -> Client:
        client = Client(self.port)
        client.login(account)
        return client

    @property
    def urls(self) -> list[str]:
        """The three NATS nodes' client addresses."""
        return [f"nats://127.0.0.1:{self.nats_port + i}" for i in range(3)]

    def state(self, what: str) -> dict:
        """A role's own state (state.risk.<k>, state.engine.<e>) over NATS."""
        import json

        import nats

        async def ask() -> dict:
            nc = await nats.connect(self.urls)
            try:
                for _ in range(60):  # a restarted role answers once it has replayed its input
                    try:
                        return dict(json.loads((await nc.request(what, b"", timeout=10)).data))
                    except nats.errors.NoRespondersError:
                        await asyncio.sleep(0.5)
                raise TimeoutError(f"nobody answers {what}")
            finally:
                await nc.close()

        return asyncio.run(ask())

    def stop(self) -> None:
        if (self.dir / "pids").exists():
            self._cli("down")


class Proxy:
    """A TCP forwarder in front of one route: cut() drops its connections and refuses new
    ones (a network partition between two nodes), heal() lets them through again."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.open = True
        self.pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> None:
        server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self.pipes |= {writer, up_writer}

        async def pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (OSError, asyncio.IncompleteReadError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    def cut(self) -> None:
        self.open = False
        for w in self.pipes:
            w.transport.abort()
        self.pipes.clear()

    def heal(self) -> None:
        self.open = True


class Proxies:
    """Route proxies between every two of three NATS nodes, on an event loop of their own
    (a thread): partition(node) cuts a node off from the others, heal(node) lets it back."""

    def __init__(self, route_ports: list[int]) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.pairs = {(i, j): Proxy(route_ports[j]) for i in range(3) for j in range(3) if i != j}
        for proxy in self.pairs.values():
            asyncio.run_coroutine_threadsafe(proxy.start(), self.loop).result(10)

    @property
    def route_via(self) -> dict[tuple[int, int], int]:
        return {k: p.port for k, p in self.pairs.items()}

    def partition(self, node: int, cut: bool = True) -> None:
        for (i, j), proxy in self.pairs.items():
            if node in (i, j):
                self.loop.call_soon_threadsafe(proxy.cut if cut else proxy.heal)

    def heal(self, node: int) -> None:
        self.partition(node, cut=False)


def fills_by_owner(db: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """From a trade log: each owner's FILLs' trade ids as its reports have them, and as the
    trades say they should be (one per trade it was a side of). Equal: none lost, none twice."""
    from journal.queries import reports_of, trades
    from protocol.messages import Fill

    want: dict[str, list[str]] = {}
    last = 0  # the last trade's command: no FILL comes after it
    for row in trades(db):
        for owner in (row["maker_owner"], row["taker_owner"]):
            want.setdefault(owner, []).append(row["trade_id"])
        last = max(last, row["seq"])
    got = {owner: sorted(r.trade_id for r in reports_of(db, owner, 0, last) if type(r) is Fill) for owner in want}
    return got, {owner: sorted(ids) for owner, ids in want.items()}
