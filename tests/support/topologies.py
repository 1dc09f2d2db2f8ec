"""Real Redis Sentinel and Redis Cluster topologies for the tests, from the Debian binaries.

:class:`SentinelSetup` is one primary, one replica and three sentinels (quorum 2);
:class:`ClusterSetup` is six cluster nodes, three primaries with one replica each. Both start
every ``redis-server`` through the gateway's child-process helper (each with its own directory
and log file), so nothing outlives the test run, and both can SIGKILL a primary, wait for the
promotion, and start the killed node again so that it rejoins as a replica.

:func:`sentinel_setup` and :func:`cluster_setup` are context managers that start a topology and
always stop it, for session fixtures::

    @pytest.fixture(scope="session")
    def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSetup]:
        with cluster_setup(tmp_path_factory.mktemp("cluster")) as cluster:
            yield cluster

Nothing is persisted (no RDB snapshots, no AOF): a killed node comes back empty and resyncs
from its new primary. Cluster nodes keep their ``nodes.conf``, which is how a restarted node
learns that it was failed over.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
import redis.cluster

from courier_gateway.devstack.processes import Child, free_port, start_child, tcp_open, wait_until

__all__ = [
    "ClusterNodeInfo",
    "ClusterSetup",
    "RedisNode",
    "SentinelSetup",
    "cluster_setup",
    "sentinel_setup",
]

HOST = "127.0.0.1"


def _binary(name: str) -> str:
    binary = shutil.which(name)
    assert binary, f"{name} is not installed (make test installs it)"
    return binary


def _server_arguments(port: int, directory: Path) -> list[str]:
    """A loopback-only ``redis-server`` with nothing persisted and no protected mode.

    Full resyncs start at once (the default waits 5 s for more replicas to join a diskless
    transfer), so a replica connects in well under a second, and a replica loads them straight
    from the socket: by default it writes a ``dump.rdb`` that a restarted node would load.
    """
    return [
        "--port",
        str(port),
        "--bind",
        HOST,
        "--protected-mode",
        "no",
        "--dir",
        str(directory),
        "--save",
        "",
        "--appendonly",
        "no",
        "--repl-diskless-sync-delay",
        "0",
        "--repl-diskless-load",
        "swapdb",
    ]


def _poll(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``check`` (redis errors count as "not yet") until true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return True
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


@dataclass
class RedisNode:
    """One ``redis-server`` process (data node or sentinel) with a fixed port and directory.

    It can be killed and started again with the same command, port and directory.
    """

    name: str
    directory: Path
    port: int
    command: list[str]
    child: Child | None = None

    @property
    def running(self) -> bool:
        """Whether the process was started and has not exited."""
        return self.child is not None and self.child.process.poll() is None

    def client(self, **kwargs: Any) -> redis.Redis:
        """A new client of this node only (decoded replies, short timeouts by default)."""
        options: dict[str, Any] = {
            "decode_responses": True,
            "socket_timeout": 2.0,
            "socket_connect_timeout": 1.0,
        }
        options.update(kwargs)
        return redis.Redis(host=HOST, port=self.port, **options)

    def call(self, *args: str | int) -> Any:
        """Send one command on a short-lived connection and return the (decoded) reply."""
        with self.client() as client:
            return client.execute_command(*args)

    def start(self, timeout: float = 15.0) -> None:
        """Start the process and wait until it answers PING."""
        self.directory.mkdir(parents=True, exist_ok=True)
        self.child = start_child(self.name, self.command, log_file=self.directory / "redis.log")
        child = self.child
        assert wait_until(lambda: tcp_open(self.port), timeout=timeout, child=child), self.logs()
        assert _poll(lambda: bool(self.call("PING")), timeout), self.logs()

    def stop(self) -> None:
        """SIGTERM (then SIGKILL after 10 s); nothing when it is not running."""
        if self.child is not None:
            self.child.stop(timeout=10)
            self.child = None

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        if self.child is not None:
            self.child.process.kill()
            self.child.process.wait(timeout=10)
            self.child = None

    def logs(self) -> str:
        """The tail of the node's log file (for assertion messages)."""
        path = self.directory / "redis.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    def role(self) -> list[Any]:
        """The node's ROLE reply: ``["master", offset, replicas]`` or ``["slave", host, port,
        state, offset]``."""
        reply: list[Any] = self.call("ROLE")
        return reply


def _is_connected_replica_of(node: RedisNode, primary_port: int) -> bool:
    role = node.role()
    return role[0] == "slave" and int(role[2]) == primary_port and role[3] == "connected"


# --------------------------------------------------------------------------------------------
# Sentinel
# --------------------------------------------------------------------------------------------


@dataclass
class SentinelSetup:
    """One primary, one replica and three sentinels (quorum 2) on loopback.

    Sentinels declare a primary down after 1 s without answers, so a killed primary is
    replaced in about 2-3 s. Each sentinel has its own writable ``sentinel.conf`` (sentinels
    rewrite it as the topology changes).

    A 1 s ``down_after_ms`` is as short as the sentinels' reconnect period: right after a
    switch they may flag the new primary down for a moment (see :meth:`wait_promoted`);
    ``down_after_ms=1500`` avoids that, for about 0.5 s more per failover.
    """

    directory: Path
    master_name: str = "cg-primary"
    #: Sentinel ``down-after-milliseconds`` and ``failover-timeout``.
    down_after_ms: int = 1000
    failover_timeout_ms: int = 5000
    data_nodes: list[RedisNode] = field(default_factory=list)
    sentinels: list[RedisNode] = field(default_factory=list)
    killed: RedisNode | None = None

    def start(self, timeout: float = 30.0) -> None:
        """Start the primary, the replica and the sentinels; wait until all know each other."""
        server = _binary("redis-server")
        primary_port, replica_port = free_port(), free_port()
        primary_dir, replica_dir = self.directory / "primary", self.directory / "replica"
        primary = RedisNode(
            "redis-primary",
            primary_dir,
            primary_port,
            [server, *_server_arguments(primary_port, primary_dir)],
        )
        replica = RedisNode(
            "redis-replica",
            replica_dir,
            replica_port,
            [
                server,
                *_server_arguments(replica_port, replica_dir),
                "--replicaof",
                HOST,
                str(primary_port),
            ],
        )
        self.data_nodes = [primary, replica]
        primary.start()
        replica.start()
        assert _poll(lambda: _is_connected_replica_of(replica, primary_port), timeout), (
            replica.logs()
        )
        for index in range(3):
            port = free_port()
            directory = self.directory / f"sentinel-{index}"
            directory.mkdir(parents=True, exist_ok=True)
            conf = directory / "sentinel.conf"
            conf.write_text(self._sentinel_conf(port, directory, primary_port))
            sentinel = RedisNode(
                f"redis-sentinel-{index}", directory, port, [server, str(conf), "--sentinel"]
            )
            self.sentinels.append(sentinel)
            sentinel.start()
        assert _poll(self._sentinels_ready, timeout, interval=0.2), self._sentinel_logs()

    def _sentinel_conf(self, port: int, directory: Path, primary_port: int) -> str:
        name = self.master_name
        return "\n".join(
            [
                f"port {port}",
                f"bind {HOST}",
                "protected-mode no",
                f"dir {directory}",
                "sentinel resolve-hostnames no",
                f"sentinel monitor {name} {HOST} {primary_port} 2",
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}",
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}",
                f"sentinel parallel-syncs {name} 1",
                "",
            ]
        )

    def _sentinels_ready(self) -> bool:
        """Every sentinel sees the primary up, its replica and the two other sentinels."""
        for sentinel in self.sentinels:
            state = _sentinel_state(sentinel, self.master_name)
            if (
                int(state["num-other-sentinels"]) != len(self.sentinels) - 1
                or int(state["num-slaves"]) < 1
                or _flags(state) != {"master"}
            ):
                return False
        return True

    def _sentinel_logs(self) -> str:
        return "\n".join(f"--- {s.name}\n{s.logs()}" for s in self.sentinels)

    def stop(self) -> None:
        """Stop the sentinels first (so they start no failover), then the data nodes."""
        for node in [*self.sentinels, *self.data_nodes]:
            node.stop()

    def sentinels_env(self) -> str:
        """The sentinels as ``"127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3"``."""
        return ",".join(f"{HOST}:{s.port}" for s in self.sentinels)

    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """The sentinels as ``(host, port)`` pairs, for ``redis.sentinel.Sentinel``."""
        return [(HOST, s.port) for s in self.sentinels]

    def _reported_ports(self) -> set[int]:
        """The primary port each running sentinel reports (errors are skipped)."""
        ports: set[int] = set()
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with suppress(redis.RedisError):
                address = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                if address:
                    ports.add(int(address[1]))
        return ports

    def primary_port(self) -> int:
        """The primary's port, as the first sentinel that answers reports it."""
        for sentinel in self.sentinels:
            if not sentinel.running:
                continue
            with suppress(redis.RedisError):
                address = sentinel.call("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.master_name)
                if address:
                    return int(address[1])
        raise AssertionError("no sentinel reports a primary")

    def node(self, port: int) -> RedisNode:
        """The data node listening on ``port``."""
        for node in self.data_nodes:
            if node.port == port:
                return node
        raise KeyError(port)

    def kill_primary(self) -> int:
        """SIGKILL the current primary; return its port."""
        port = self.primary_port()
        node = self.node(port)
        node.kill()
        self.killed = node
        return port

    def wait_promoted(self, old_port: int, timeout: float = 30.0) -> int:
        """Wait until every sentinel reports one primary other than ``old_port``, that node
        answers ROLE as master, and every sentinel is connected to it; return its port.

        The sentinels reach a new primary only about 1 s after they switch to it (their
        reconnect period), and until then a 1 s ``down_after_ms`` can flag it down for a
        moment; waiting for that link keeps the next step of a test out of that window. A
        sentinel starts no second failover of the same primary within twice
        ``failover_timeout_ms`` (10 s) of the previous one: keep ``timeout`` above that when
        killing primaries back to back.
        """
        promoted: list[int] = []

        def done() -> bool:
            ports = self._reported_ports()
            if len(ports) != 1 or old_port in ports:
                return False
            (port,) = ports
            if self.node(port).role()[0] != "master":
                return False
            # Settled: every sentinel has connected to the new primary and sees it up.
            for sentinel in self.sentinels:
                if not sentinel.running:
                    continue
                if _flags(_sentinel_state(sentinel, self.master_name)) != {"master"}:
                    return False
            promoted[:] = [port]
            return True

        assert _poll(done, timeout, interval=0.1), (
            f"no promotion away from {old_port} within {timeout} s\n{self._sentinel_logs()}"
        )
        return promoted[0]

    def restart_killed_as_replica(
        self, *, via_sentinel: bool = False, timeout: float = 30.0
    ) -> int:
        """Start the killed node again as a replica of the current primary; return its port.

        By default it starts with ``--replicaof <current primary>`` (connected in about 1 s).
        With ``via_sentinel`` it starts as it was, without ``--replicaof``, so it comes back
        as an empty primary and the sentinels turn it into a replica: that takes 10-15 s
        (they wait 8 s after noticing a stale primary before they reconfigure it). Do not fail
        over during that window: the sentinels still list the node as a replica and may promote
        it, empty.

        Either way it returns once the node is a connected replica and every sentinel sees it
        as a healthy replica again (so a further failover may pick it).
        """
        node = self.killed
        assert node is not None, "no node was killed"
        primary = self.primary_port()
        command = _without_replicaof(node.command)
        if not via_sentinel:
            command += ["--replicaof", HOST, str(primary)]
        node.command = command
        node.start()
        self.killed = None
        assert _poll(lambda: _is_connected_replica_of(node, primary), timeout, interval=0.1), (
            f"{node.name} did not rejoin as a replica of {primary}\n{node.logs()}"
        )

        def seen_by_sentinels() -> bool:
            for sentinel in self.sentinels:
                with sentinel.client() as client:
                    replicas = cast(
                        "list[dict[str, Any]]", client.sentinel_slaves(self.master_name)
                    )
                mine = [r for r in replicas if int(r["port"]) == node.port]
                if not mine or _flags(mine[0]) != {"slave"}:
                    return False
            return True

        assert _poll(seen_by_sentinels, timeout, interval=0.1), self._sentinel_logs()
        return node.port


def _sentinel_state(sentinel: RedisNode, master_name: str) -> dict[str, Any]:
    """``SENTINEL MASTER`` as redis-py parses it."""
    with sentinel.client() as client:
        return cast("dict[str, Any]", client.sentinel_master(master_name))


def _flags(state: dict[str, Any]) -> set[str]:
    """A sentinel state's flags (redis-py gives a string over RESP2, a set over RESP3)."""
    flags = state["flags"]
    return set(flags.split(",")) if isinstance(flags, str) else set(flags)


def _without_replicaof(command: list[str]) -> list[str]:
    """``command`` without its ``--replicaof HOST PORT`` arguments."""
    if "--replicaof" not in command:
        return list(command)
    index = command.index("--replicaof")
    return command[:index] + command[index + 3 :]


@contextmanager
def sentinel_setup(directory: Path) -> Iterator[SentinelSetup]:
    """A started :class:`SentinelSetup` in ``directory``, stopped on exit (even on errors)."""
    setup = SentinelSetup(directory)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()


# --------------------------------------------------------------------------------------------
# Cluster
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterNodeInfo:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    connected: bool
    slots: tuple[str, ...]

    @property
    def is_primary(self) -> bool:
        """Flagged ``master`` (a failed primary keeps the flag, with ``fail`` added)."""
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged ``fail`` or ``fail?`` by the node that answered."""
        return bool(self.flags & {"fail", "fail?"})


def _cluster_nodes(node: RedisNode) -> list[ClusterNodeInfo]:
    text: str = node.call("CLUSTER", "NODES")
    infos = []
    for line in text.strip().splitlines():
        parts = line.split()
        address = parts[1].split("@", 1)[0]
        infos.append(
            ClusterNodeInfo(
                node_id=parts[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(parts[2].split(",")),
                master_id=None if parts[3] == "-" else parts[3],
                connected=parts[7] == "connected",
                slots=tuple(parts[8:]),
            )
        )
    return infos


def _cluster_state_ok(node: RedisNode) -> bool:
    return "cluster_state:ok" in str(node.call("CLUSTER", "INFO"))


@dataclass
class ClusterSetup:
    """Six cluster nodes on loopback: three primaries, each with one replica.

    ``--cluster-node-timeout 1000``, so a killed primary's replica takes over in about 2-4 s.
    Each node has its own directory (with its ``nodes.conf``) and its own cluster-bus port.
    """

    directory: Path
    size: int = 6
    replicas: int = 1
    nodes: dict[int, RedisNode] = field(default_factory=dict)
    #: For each killed primary's port, the port of the replica it had when it was killed.
    replica_at_kill: dict[int, int] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """A seed URL (the first running node): ``RedisCluster.from_url`` discovers the rest."""
        live = self._live() or list(self.nodes.values())
        return f"redis://{HOST}:{live[0].port}/0"

    def start(self, timeout: float = 30.0) -> None:
        """Start the nodes, create the cluster, and wait until it is healthy."""
        server = _binary("redis-server")
        for index in range(self.size):
            port, bus_port = free_port(), free_port()
            directory = self.directory / f"node-{index}"
            node = RedisNode(
                f"redis-cluster-{index}",
                directory,
                port,
                [
                    server,
                    *_server_arguments(port, directory),
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "1000",
                    # Its own bus port: port + 10000 (the default) may be taken or above 65535.
                    "--cluster-port",
                    str(bus_port),
                ],
            )
            self.nodes[port] = node
            node.start()
        created = subprocess.run(
            [
                _binary("redis-cli"),
                "--cluster",
                "create",
                *(f"{HOST}:{port}" for port in self.nodes),
                "--cluster-replicas",
                str(self.replicas),
                "--cluster-yes",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert created.returncode == 0, created.stdout + created.stderr
        assert _poll(self.healthy, timeout, interval=0.1), self._describe()

    def stop(self) -> None:
        """Stop every node."""
        for node in self.nodes.values():
            node.stop()

    def _live(self) -> list[RedisNode]:
        return [node for node in self.nodes.values() if node.running]

    def _describe(self) -> str:
        for node in self._live():
            with suppress(redis.RedisError):
                return str(node.call("CLUSTER", "NODES"))
        return "no node answers"

    def healthy(self) -> bool:
        """Every node is running, says ``cluster_state:ok``, flags no node as failing and sees
        the same primaries, and every primary has a replica connected to it."""
        live = self._live()
        if len(live) != len(self.nodes):
            return False
        views = [self._primaries_seen_by(node) for node in live]
        if views[0] is None or any(view != views[0] for view in views):
            return False
        return all(self._has_connected_replica(port) for port in views[0])

    def _primaries_seen_by(self, node: RedisNode) -> list[int] | None:
        """The primaries ``node`` sees, or None when it is not ok or sees a node failing."""
        if not _cluster_state_ok(node):
            return None
        infos = _cluster_nodes(node)
        if any(info.failed for info in infos):
            return None
        return sorted(info.port for info in infos if info.is_primary)

    def _has_connected_replica(self, port: int) -> bool:
        role = self.nodes[port].role()
        if role[0] != "master" or len(role[2]) < self.replicas:
            return False
        return _is_connected_replica_of(self.nodes[self.replica_of(port)], port)

    def cluster_nodes(self) -> list[ClusterNodeInfo]:
        """``CLUSTER NODES`` as the first running node reports it."""
        for node in self._live():
            with suppress(redis.RedisError):
                return _cluster_nodes(node)
        raise AssertionError("no cluster node answers")

    def primaries(self) -> list[int]:
        """The ports of the primaries that serve slots and are not failed."""
        return sorted(
            info.port
            for info in self.cluster_nodes()
            if info.is_primary and not info.failed and info.slots
        )

    def replica_of(self, port: int) -> int:
        """The port of a replica of the primary on ``port``."""
        infos = self.cluster_nodes()
        primary_id = next(info.node_id for info in infos if info.port == port)
        for info in infos:
            if info.master_id == primary_id:
                return info.port
        raise AssertionError(f"no replica of {port}:\n{self._describe()}")

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A new synchronous cluster client seeded with the first running node."""
        seed = self._live()[0].port
        return redis.cluster.RedisCluster(host=HOST, port=seed, **kwargs)

    def kill_node(self, port: int) -> None:
        """SIGKILL the node on ``port`` (a primary's current replica is remembered first)."""
        if port in self.primaries():
            self.replica_at_kill[port] = self.replica_of(port)
        self.nodes[port].kill()

    def wait_failover(self, killed_port: int, timeout: float = 30.0) -> int:
        """Wait until the replica of the killed primary is a primary, as it says itself and as
        every running node sees it, and every running node says ``cluster_state:ok``; return
        its port."""
        assert killed_port in self.replica_at_kill, f"{killed_port} was not a primary killed"
        replica = self.nodes[self.replica_at_kill[killed_port]]

        def done() -> bool:
            if replica.role()[0] != "master":
                return False
            for node in self._live():
                if not _cluster_state_ok(node):
                    return False
                view = {info.port: info for info in _cluster_nodes(node)}
                if not (view[replica.port].is_primary and view[replica.port].slots):
                    return False
            return True

        assert _poll(done, timeout, interval=0.1), (
            f"no failover of {killed_port} within {timeout} s:\n{self._describe()}"
        )
        return replica.port

    def restart_node(self, port: int, timeout: float = 30.0) -> None:
        """Start the node on ``port`` again (same directory and ``nodes.conf``); a failed-over
        primary rejoins as a replica of its successor. Wait until the cluster is healthy."""
        self.nodes[port].start()
        self.replica_at_kill.pop(port, None)
        assert _poll(self.healthy, timeout, interval=0.1), self._describe()

    def flush(self) -> None:
        """FLUSHALL on every primary (and wait up to 2 s for its replica to apply it), so tests
        can share one cluster. Loaded scripts are kept."""
        for port in self.primaries():
            with self.nodes[port].client() as client:
                client.flushall()
                client.execute_command("WAIT", 1, 2000)


@contextmanager
def cluster_setup(directory: Path) -> Iterator[ClusterSetup]:
    """A started :class:`ClusterSetup` in ``directory``, stopped on exit (even on errors)."""
    setup = ClusterSetup(directory)
    try:
        setup.start()
        yield setup
    finally:
        setup.stop()
