"""Redis as a ticket company runs it, on free local ports: a Redis Cluster, a master with
replicas watched by Sentinels, and a TLS server with an ACL user; any of them behind TLS with
client certificates and an ACL user (``Access``).

Used by the infrastructure tests (tests/infra) and the benchmarks (``python -m bench cluster``,
``python -m bench durability``). Each piece is the Debian ``redis-server`` binary (or what
``WAITROOM_DEV_REDIS_SERVER`` names); ``redis-cli`` builds the cluster. Timings on this machine
(2 cores): three masters form a cluster in about 2 s; Sentinel promotes the replica about 2.3 s
after the master is killed with ``down-after-milliseconds 1000``.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from waitroom_dev.services import Service, ServiceError, free_port, redis_server_binary

#: How long a cluster or a Sentinel group may take to come up before we give up.
READY_SECONDS = 30.0


def redis_cli_binary() -> str:
    found = shutil.which("redis-cli")
    if not found:
        raise ServiceError("redis-cli is not on the PATH: apt-get install redis-tools")
    return found


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        port = free_port()
        if port + 10000 < 65536 and _port_free(port + 10000):
            return port
    raise ServiceError("no free port with a free cluster bus port")


def cli(*args: str, timeout: float = 60.0) -> str:
    """Run ``redis-cli`` and return its output; a failure raises with the output."""
    result = subprocess.run(
        [redis_cli_binary(), *args], capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise ServiceError(f"redis-cli {' '.join(args)} failed: {result.stdout}{result.stderr}")
    return result.stdout


def _base_args(port: int, workdir: Path) -> list[str]:
    return [
        redis_server_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(workdir),
        # A replica's first sync otherwise waits 5 s for more replicas to share the transfer.
        "--repl-diskless-sync-delay",
        "0",
    ]


def _wait(check: object, what: str, timeout: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
            if callable(check) and check():
                return
        time.sleep(0.1)
    raise ServiceError(f"timed out after {timeout:g} s waiting for {what}")


# --- Access: TLS and an ACL user ----------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """How the servers of a deployment are reached: with ``certs``, TLS only (client
    certificates required, replication and the cluster bus over TLS too); with ``user``, that
    ACL user and ``password`` and the default user off; with a ``password`` alone,
    ``requirepass``. Replicas authenticate to their master the same way."""

    certs: Certificates | None = None
    user: str = ""
    password: str = ""

    @property
    def scheme(self) -> str:
        return "rediss" if self.certs else "redis"

    def listen(self, port: int) -> list[list[str]]:
        """The directives (each a list of words) to serve on ``port``."""
        if self.certs is None:
            return [["port", str(port)]]
        return [
            ["port", "0"],
            ["tls-port", str(port)],
            ["tls-cert-file", str(self.certs.server_cert)],
            ["tls-key-file", str(self.certs.server_key)],
            ["tls-ca-cert-file", str(self.certs.ca)],
            ["tls-auth-clients", "yes"],
            ["tls-replication", "yes"],
        ]

    def users(self) -> list[list[str]]:
        """The directives that make a server ask for the user and password."""
        if self.user:
            everything = ["on", f">{self.password}", "~*", "&*", "+@all"]
            return [
                ["user", "default", "off"],
                ["user", self.user, *everything],
                ["masteruser", self.user],
                ["masterauth", self.password],
            ]
        if self.password:
            return [["requirepass", self.password], ["masterauth", self.password]]
        return []

    def server_args(self, port: int, workdir: Path) -> list[str]:
        """A ``redis-server`` command line serving on ``port`` as this access says."""
        # redis-server quotes each argument, so every word of a directive is its own argument.
        words = [[f"--{d[0]}", *d[1:]] for d in [*self.listen(port), *self.users()]]
        return [*_base_args(port, workdir), *(w for d in words for w in d)]

    def cli_args(self) -> list[str]:
        """The ``redis-cli`` flags to reach a server of this access."""
        args = ["--no-auth-warning"]
        if self.certs is not None:
            args += ["--tls", "--cacert", str(self.certs.ca)]
            args += ["--cert", str(self.certs.client_cert), "--key", str(self.certs.client_key)]
        if self.user:
            args += ["--user", self.user]
        if self.password:
            args += ["--pass", self.password]
        return args

    def env(self) -> dict[str, str]:
        """The ``WAITROOM_REDIS_*`` settings of a process that reaches these servers."""
        env = {}
        if self.user:
            env["WAITROOM_REDIS_USERNAME"] = self.user
        if self.password:
            env["WAITROOM_REDIS_PASSWORD"] = self.password
        if self.certs is not None:
            env["WAITROOM_REDIS_TLS_CA_FILE"] = str(self.certs.ca)
            env["WAITROOM_REDIS_TLS_CERT_FILE"] = str(self.certs.client_cert)
            env["WAITROOM_REDIS_TLS_KEY_FILE"] = str(self.certs.client_key)
        return env


# --- Redis Cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """A Redis Cluster, one ``redis-server`` per node: ``replicas`` replicas per master."""

    workdir: Path
    access: Access = Access()
    replicas: int = 0
    nodes: list[Service] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        """The ports of the nodes that run, masters and replicas."""
        return [n.port for n in self.nodes if n.proc is not None]

    @property
    def url(self) -> str:
        """The URL of one node: enough for a cluster client to find the rest."""
        return f"{self.access.scheme}://127.0.0.1:{self.ports[0]}/0"

    def env(self) -> dict[str, str]:
        """The ``WAITROOM_REDIS_*`` settings of a process using this cluster: every node as a
        seed, so a client built after a node died still finds the cluster."""
        return {
            **self.access.env(),
            "WAITROOM_REDIS_URL": self.url,
            "WAITROOM_REDIS_MODE": "cluster",
            "WAITROOM_REDIS_CLUSTER_NODES": ",".join(f"127.0.0.1:{p}" for p in self.ports[1:]),
        }

    def start(self, masters: int = 3) -> Cluster:
        for _ in range(masters * (1 + self.replicas)):
            # With TLS the bus port is the TLS port + 10000: cluster_port checks it is free.
            port = cluster_port()
            home = self.workdir / f"cluster-{port}"
            home.mkdir(parents=True, exist_ok=True)
            args = [
                *self.access.server_args(port, home),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(home / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
            if self.access.certs is not None:
                args += ["--tls-cluster", "yes"]
            self.nodes.append(Service(f"cluster-{port}", port, args, home / "redis.log").start())
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        self.cli(
            "--cluster", "create", *addresses, "--cluster-replicas", str(self.replicas),
            "--cluster-yes",
        )  # fmt: skip
        for port in self.ports:
            _wait(lambda p=port: self._ready(p), f"cluster_state:ok and replicas in sync on {port}")
        return self

    def _ready(self, port: int) -> bool:
        if "cluster_state:ok" not in self.info(port):
            return False
        replication = self.cli("-p", str(port), "info", "replication", timeout=5)
        return "role:master" in replication or "master_link_status:up" in replication

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """``redis-cli`` with this cluster's TLS files and user."""
        return cli(*self.access.cli_args(), *args, timeout=timeout)

    def info(self, port: int) -> str:
        return self.cli("-p", str(port), "cluster", "info", timeout=5)

    def slots(self) -> list[tuple[int, int, int]]:
        """``(first, last, port)`` for every slot range, as the cluster reports it now."""
        return _slot_ranges(self.cli("-p", str(self.ports[0]), "cluster", "nodes", timeout=5))

    def slot_owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for first, last, port in self.slots():
            if first <= slot <= last:
                return port
        raise ServiceError(f"no node serves slot {slot}")

    def node_id(self, port: int) -> str:
        return self.cli("-p", str(port), "cluster", "myid", timeout=5).strip()

    def reshard(self, source: int, target: int, slots: int) -> str:
        """Move ``slots`` slots (with their keys) from the master on port ``source`` to the one
        on ``target``, as an operator would: ``redis-cli --cluster reshard``."""
        return self.cli(
            "--cluster",
            "reshard",
            f"127.0.0.1:{self.ports[0]}",
            "--cluster-from",
            self.node_id(source),
            "--cluster-to",
            self.node_id(target),
            "--cluster-slots",
            str(slots),
            "--cluster-yes",
            "--cluster-pipeline",
            "100",
            timeout=120,
        )

    def kill(self, port: int) -> None:
        """kill -9 the node on ``port``, as a crashed machine would."""
        next(n for n in self.nodes if n.port == port).kill()

    def wait_for_failover(self, slot: int, old_port: int, timeout: float = READY_SECONDS) -> int:
        """Wait until a replica serves ``slot`` instead of the master on ``old_port`` and the
        cluster is whole again; returns the new master's port."""

        def promoted() -> bool:
            moved = self.slot_owner(slot) != old_port
            return moved and all("cluster_state:ok" in self.info(p) for p in self.ports)

        _wait(promoted, f"a replica to take over slot {slot} from {old_port}", timeout)
        return self.slot_owner(slot)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _slot_ranges(nodes: str) -> list[tuple[int, int, int]]:
    """``(first, last, port)`` per slot range of the masters in ``CLUSTER NODES`` output
    (``id host:port@bus flags master ping pong epoch link slot...``); failed nodes and slots
    being migrated (``[slot->-id]``) left out."""
    ranges = []
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) < 8 or "master" not in fields[2] or "fail" in fields[2]:
            continue
        port = int(fields[1].split("@")[0].rpartition(":")[2])
        for item in fields[8:]:
            if not item.startswith("["):
                first, _, last = item.partition("-")
                ranges.append((int(first), int(last or first), port))
    return sorted(ranges)


@contextlib.contextmanager
def redis_cluster(
    workdir: Path, masters: int = 3, *, access: Access | None = None, replicas: int = 0
) -> Iterator[Cluster]:
    cluster = Cluster(workdir, access or Access(), replicas)
    try:
        yield cluster.start(masters)
    finally:
        cluster.stop()


# --- Sentinel ---------------------------------------------------------------------------------


@dataclass
class SentinelGroup:
    """One master, ``replicas`` replicas and three Sentinels watching them as
    ``master_name``; the Sentinels share the servers' TLS and ask for ``sentinel_password``,
    as the ACL user ``sentinel_user`` (the default user off) when one is given."""

    workdir: Path
    master_name: str = "waitroom"
    access: Access = Access()
    sentinel_password: str = ""
    sentinel_user: str = ""
    replicas: int = 1
    #: How many Sentinels watch (0: a master and its replicas only, for benchmarks).
    watchers: int = 3
    servers: list[Service] = field(default_factory=list)
    sentinels: list[Service] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def env(self) -> dict[str, str]:
        """The ``WAITROOM_REDIS_*`` settings of a process that finds the master here."""
        env = {
            **self.access.env(),
            "WAITROOM_REDIS_MODE": "sentinel",
            "WAITROOM_REDIS_URL": f"{self.access.scheme}://sentinel-managed/0",
            "WAITROOM_REDIS_SENTINELS": self.sentinel_addresses,
            "WAITROOM_REDIS_MASTER_NAME": self.master_name,
        }
        if self.sentinel_password:
            env["WAITROOM_REDIS_SENTINEL_PASSWORD"] = self.sentinel_password
        if self.sentinel_user:
            env["WAITROOM_REDIS_SENTINEL_USERNAME"] = self.sentinel_user
        return env

    def start(self) -> SentinelGroup:
        master_port = free_port()
        ports = [master_port, *(free_port() for _ in range(self.replicas))]
        for port in ports:
            home = self.workdir / f"node-{port}"
            home.mkdir(parents=True, exist_ok=True)
            follow = ["--replicaof", "127.0.0.1", str(master_port)] if port != master_port else []
            args = [*self.access.server_args(port, home), *follow]
            self.servers.append(Service(f"redis-{port}", port, args, home / "redis.log").start())
        for port in ports[1:]:
            _wait(
                lambda p=port: "master_link_status:up" in self.cli(p, "info", "replication"),
                f"the replica on {port} to sync",
            )
        for _ in range(self.watchers):
            port = free_port()
            home = self.workdir / f"sentinel-{port}"
            home.mkdir(parents=True, exist_ok=True)
            conf = home / "sentinel.conf"
            conf.write_text("\n".join(" ".join(d) for d in self._conf(port, master_port)) + "\n")
            args = [redis_server_binary(), str(conf), "--sentinel"]
            sentinel = Service(f"sentinel-{port}", port, args, home / "sentinel.log")
            self.sentinels.append(sentinel.start())
        _wait(lambda: self._sentinels_see_all(master_port), "the Sentinels to see every replica")
        return self

    def _conf(self, port: int, master_port: int) -> list[list[str]]:
        name = self.master_name
        lines = [
            *self.access.listen(port),  # TLS to clients, and to the servers and other Sentinels
            ["bind", "127.0.0.1"],
            ["dir", str(self.workdir / f"sentinel-{port}")],
            ["sentinel", "monitor", name, "127.0.0.1", str(master_port), "2"],
            ["sentinel", "down-after-milliseconds", name, "1000"],
            ["sentinel", "failover-timeout", name, "3000"],
        ]
        if self.access.user:
            lines.append(["sentinel", "auth-user", name, self.access.user])
        if self.access.password:
            lines.append(["sentinel", "auth-pass", name, self.access.password])
        if self.sentinel_user:
            # Redis 6.2+ Sentinel ACL: its own user, the default user off; the Sentinels log
            # in to one another as that user too (sentinel-user, sentinel-pass).
            rules = ["on", f">{self.sentinel_password}", "allchannels", "+@all"]
            lines.append(["user", "default", "off"])
            lines.append(["user", self.sentinel_user, *rules])
            lines.append(["sentinel", "sentinel-user", self.sentinel_user])
            lines.append(["sentinel", "sentinel-pass", self.sentinel_password])
        elif self.sentinel_password:
            # Sentinels also log in to one another with it (no sentinel-pass set).
            lines.append(["requirepass", self.sentinel_password])
        return lines

    def cli(self, port: int, *args: str) -> str:
        """``redis-cli`` to the server on ``port``."""
        return cli("-p", str(port), *self.access.cli_args(), *args, timeout=5)

    def sentinel_cli(self, port: int, *args: str) -> str:
        """``redis-cli`` to the Sentinel on ``port``."""
        tls = Access(
            self.access.certs, user=self.sentinel_user, password=self.sentinel_password
        ).cli_args()
        return cli("-p", str(port), *tls, *args, timeout=5)

    def _sentinels_see_all(self, master_port: int) -> bool:
        for sentinel in self.sentinels:
            if self.master_port_seen(sentinel.port) != str(master_port):
                return False
            fields = self.sentinel_cli(sentinel.port, "sentinel", "master", self.master_name)
            seen = dict(zip(fields.split()[::2], fields.split()[1::2], strict=False))
            if int(seen.get("num-slaves", "0")) < self.replicas:
                return False
            if int(seen.get("num-other-sentinels", "0")) < len(self.sentinels) - 1:
                return False
        return True

    def master_port_seen(self, sentinel_port: int | None = None) -> str:
        """The master's port as a Sentinel reports it."""
        port = sentinel_port or self.sentinels[0].port
        out = self.sentinel_cli(port, "sentinel", "get-master-addr-by-name", self.master_name)
        return out.split()[1] if len(out.split()) == 2 else ""

    def master(self) -> Service:
        if not self.sentinels:
            return self.servers[0]
        seen = int(self.master_port_seen())
        return next(s for s in self.servers if s.port == seen)

    def kill_master(self) -> Service:
        """kill -9 the master, as a crashed machine would; returns it."""
        master = self.master()
        master.kill()
        return master

    def wait_for_promotion(self, old_port: int, timeout: float = READY_SECONDS) -> int:
        """Wait until the Sentinels name another master; returns its port."""
        _wait(lambda: self.master_port_seen() not in ("", str(old_port)), "a promotion", timeout)
        return int(self.master_port_seen())

    def force_failover(self, timeout: float = READY_SECONDS) -> None:
        """``SENTINEL FAILOVER``: promote a replica though the master is up (refused while a
        failover is still under way or no replica is ready yet, so asked until accepted)."""
        port = self.sentinels[0].port
        _wait(
            lambda: (
                self.sentinel_cli(port, "sentinel", "failover", self.master_name).strip() == "OK"
            ),
            "Sentinel to accept a failover",
            timeout,
        )

    def stop(self) -> None:
        for s in [*self.sentinels, *self.servers]:
            s.stop()


@contextlib.contextmanager
def sentinel_group(
    workdir: Path,
    *,
    access: Access | None = None,
    sentinel_password: str = "",
    sentinel_user: str = "",
    replicas: int = 1,
) -> Iterator[SentinelGroup]:
    group = SentinelGroup(
        workdir,
        access=access or Access(),
        sentinel_password=sentinel_password,
        sentinel_user=sentinel_user,
        replicas=replicas,
    )
    try:
        yield group.start()
    finally:
        group.stop()


# --- TLS ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A CA and a server and client certificate it signed (PEM files)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def make_certificates(directory: Path, name: str = "waitroom-test") -> Certificates:
    """A fresh CA and the certificates it signs, for 127.0.0.1 and localhost (``cryptography``)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)

    def key_pair() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    def save_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
        path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        path.chmod(0o600)
        return path

    def subject(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    ca_key = key_pair()
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(subject(f"{name} CA"))
        .issuer_name(subject(f"{name} CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(cn: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = key_pair()
        sans = x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject(cn))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(sans, critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256())
        )
        return cert, key

    def save_cert(cert: x509.Certificate, path: Path) -> Path:
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return path

    server_cert, server_key = leaf("localhost")
    client_cert, client_key = leaf(f"{name} client")
    return Certificates(
        ca=save_cert(ca_cert, directory / "ca.pem"),
        server_cert=save_cert(server_cert, directory / "server.pem"),
        server_key=save_key(server_key, directory / "server.key"),
        client_cert=save_cert(client_cert, directory / "client.pem"),
        client_key=save_key(client_key, directory / "client.key"),
    )


def tls_redis_service(
    workdir: Path, certs: Certificates, *, user: str = "", password: str = ""
) -> Service:
    """A Redis that speaks only TLS (client certificates required) and, given ``user``, knows
    that ACL user with ``password`` and refuses the default user."""
    port = free_port()
    args = [
        *_base_args(0, workdir),
        "--tls-port",
        str(port),
        "--tls-cert-file",
        str(certs.server_cert),
        "--tls-key-file",
        str(certs.server_key),
        "--tls-ca-cert-file",
        str(certs.ca),
        "--tls-auth-clients",
        "yes",
    ]
    if user:
        # redis-server quotes each argument, so every word of a directive is its own argument.
        args += ["--user", "default", "off"]
        args += ["--user", user, "on", f">{password}", "~*", "&*", "+@all"]
    return Service(f"redis-tls-{port}", port, args, workdir / f"redis-tls-{port}.log")
