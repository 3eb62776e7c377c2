"""Redis as a ticket company runs it, on free local ports: a Redis Cluster, a master with a
replica watched by Sentinels, and a TLS server with an ACL user.

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
    ]


def _wait(check: object, what: str, timeout: float = READY_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(ServiceError, subprocess.TimeoutExpired):
            if callable(check) and check():
                return
        time.sleep(0.1)
    raise ServiceError(f"timed out after {timeout:g} s waiting for {what}")


# --- Redis Cluster ----------------------------------------------------------------------------


@dataclass
class Cluster:
    """A Redis Cluster of masters only (no replicas), one ``redis-server`` each."""

    workdir: Path
    nodes: list[Service] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    @property
    def url(self) -> str:
        """The URL of one node: enough for a cluster client to find the rest."""
        return f"redis://127.0.0.1:{self.ports[0]}/0"

    def start(self, masters: int = 3) -> Cluster:
        for _ in range(masters):
            port = cluster_port()
            home = self.workdir / f"cluster-{port}"
            home.mkdir(parents=True, exist_ok=True)
            args = [
                *_base_args(port, home),
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(home / "nodes.conf"),
                "--cluster-node-timeout",
                "2000",
            ]
            self.nodes.append(Service(f"cluster-{port}", port, args, home / "redis.log").start())
        addresses = [f"127.0.0.1:{p}" for p in self.ports]
        cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
        for port in self.ports:
            _wait(lambda p=port: "cluster_state:ok" in self.info(p), f"cluster_state:ok on {port}")
        return self

    def info(self, port: int) -> str:
        return cli("-p", str(port), "cluster", "info", timeout=5)

    def slots(self) -> list[tuple[int, int, int]]:
        """``(first, last, port)`` for every slot range, as the cluster reports it now."""
        return _cluster_slots(self.ports[0])

    def slot_owner(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for first, last, port in self.slots():
            if first <= slot <= last:
                return port
        raise ServiceError(f"no node serves slot {slot}")

    def node_id(self, port: int) -> str:
        return cli("-p", str(port), "cluster", "myid", timeout=5).strip()

    def reshard(self, source: int, target: int, slots: int) -> str:
        """Move ``slots`` slots (with their keys) from the master on port ``source`` to the one
        on ``target``, as an operator would: ``redis-cli --cluster reshard``."""
        return cli(
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

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _cluster_slots(port: int) -> list[tuple[int, int, int]]:
    out = cli("-p", str(port), "cluster", "slots", timeout=5).split()
    # redis-cli prints CLUSTER SLOTS flattened: first, last, host, port, id per range.
    ranges = []
    i = 0
    while i + 3 < len(out):
        ranges.append((int(out[i]), int(out[i + 1]), int(out[i + 3])))
        i += 5
    return ranges


@contextlib.contextmanager
def redis_cluster(workdir: Path, masters: int = 3) -> Iterator[Cluster]:
    cluster = Cluster(workdir)
    try:
        yield cluster.start(masters)
    finally:
        cluster.stop()


# --- Sentinel ---------------------------------------------------------------------------------


@dataclass
class SentinelGroup:
    """One master, ``replicas`` replicas and three Sentinels watching them as
    ``master_name``."""

    workdir: Path
    master_name: str = "waitroom"
    password: str = ""
    replicas: int = 1
    #: How many Sentinels watch (0: a master and its replicas only, for benchmarks).
    watchers: int = 3
    servers: list[Service] = field(default_factory=list)
    sentinels: list[Service] = field(default_factory=list)

    @property
    def sentinel_addresses(self) -> str:
        return ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)

    def _auth(self) -> list[str]:
        return (
            ["--requirepass", self.password, "--masterauth", self.password] if self.password else []
        )

    def start(self) -> SentinelGroup:
        master_port = free_port()
        ports = [master_port, *(free_port() for _ in range(self.replicas))]
        for port in ports:
            home = self.workdir / f"node-{port}"
            home.mkdir(parents=True, exist_ok=True)
            follow = ["--replicaof", "127.0.0.1", str(master_port)] if port != master_port else []
            args = [*_base_args(port, home), *self._auth(), *follow]
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
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {home}",
                f"sentinel monitor {self.master_name} 127.0.0.1 {master_port} 2",
                f"sentinel down-after-milliseconds {self.master_name} 1000",
                f"sentinel failover-timeout {self.master_name} 3000",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {self.master_name} {self.password}")
            conf.write_text("\n".join(lines) + "\n")
            args = [redis_server_binary(), str(conf), "--sentinel"]
            sentinel = Service(f"sentinel-{port}", port, args, home / "sentinel.log")
            self.sentinels.append(sentinel.start())
        _wait(lambda: self._sentinels_see_all(master_port), "the Sentinels to see every replica")
        return self

    def cli(self, port: int, *args: str) -> str:
        auth = ["--no-auth-warning", "-a", self.password] if self.password else []
        return cli("-p", str(port), *auth, *args, timeout=5)

    def _sentinels_see_all(self, master_port: int) -> bool:
        for sentinel in self.sentinels:
            if self.master_port_seen(sentinel.port) != str(master_port):
                return False
            fields = cli("-p", str(sentinel.port), "sentinel", "master", self.master_name).split()
            seen = dict(zip(fields[::2], fields[1::2], strict=False))
            if int(seen.get("num-slaves", "0")) < self.replicas:
                return False
        return True

    def master_port_seen(self, sentinel_port: int | None = None) -> str:
        """The master's port as a Sentinel reports it."""
        port = sentinel_port or self.sentinels[0].port
        out = cli(
            "-p", str(port), "sentinel", "get-master-addr-by-name", self.master_name, timeout=5
        )
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

    def stop(self) -> None:
        for s in [*self.sentinels, *self.servers]:
            s.stop()


@contextlib.contextmanager
def sentinel_group(
    workdir: Path, *, password: str = "", replicas: int = 1
) -> Iterator[SentinelGroup]:
    group = SentinelGroup(workdir, password=password, replicas=replicas)
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
