"""Kafka over TLS with client certificates, end to end, and what bad security settings do.

The broker speaks plaintext only, so a TLS terminator listens on the address it advertises
and requires a client certificate from the test CA: every client (the admitter's producer and
admin client, the consumer, ``waitroom checkout``) reaches the broker only through TLS.

SASL is not tested against a broker (none here speaks it): the unit tests check that every
mechanism reaches kafka-python's own clients and SASL implementations with the right options.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tls_support import Pair, TlsTerminator, make_ca, make_cert

from shared import kafka as shared_kafka
from shared import settings as settings_mod
from shared.events import EventConfig, EventStore
from shared.messages import QUEUE_READY
from shared.scripts import Scripts
from shared.sessions import Status
from tests.support import with_scripts
from waitroom_dev.services import Service, broker_binary, free_port

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import kafka
    import kafka.admin

KEY_PASSWORD = "client-key-password"
WAITROOM = [sys.executable, "-c", "from waitroom_cli.main import cli; cli()"]


@dataclass(frozen=True)
class Pki:
    ca: Pair
    broker: Pair
    client: Pair  # its key is encrypted with KEY_PASSWORD
    other_ca: Pair
    password_file: Path


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = make_ca(directory, "test-ca")
    password_file = directory / "key-password"
    password_file.write_text(KEY_PASSWORD + "\n")  # as `echo` writes it
    return Pki(
        ca=ca,
        broker=make_cert(directory, "broker", ca),
        client=make_cert(directory, "waitroom-client", ca, password=KEY_PASSWORD),
        other_ca=make_ca(directory, "other-ca"),
        password_file=password_file,
    )


@dataclass
class TlsBroker:
    bootstrap: str
    terminator: TlsTerminator


@pytest.fixture(scope="module")
def tls_broker(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsBroker]:
    """A broker that advertises a TLS address (the terminator's) and listens on another."""
    workdir = tmp_path_factory.mktemp("tls-broker")
    plain, tls = free_port(), free_port()
    args = [
        broker_binary(),
        "broker",
        "--listener-url",
        f"tcp://127.0.0.1:{plain}",
        "--advertised-listener-url",
        f"tcp://127.0.0.1:{tls}",
    ]
    broker = Service("kafka-behind-tls", plain, args, workdir / "broker.log").start()
    terminator = TlsTerminator(tls, plain, pki.broker, client_ca=pki.ca.cert).start()
    try:
        yield TlsBroker(f"127.0.0.1:{tls}", terminator)
    finally:
        terminator.stop()
        broker.stop()


def tls_settings(pki: Pki, bootstrap: str, ca: Path | None = None) -> dict[str, str]:
    """The variables that send a process to ``bootstrap`` over TLS with the client certificate."""
    return {
        "WAITROOM_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "WAITROOM_KAFKA_SECURITY_PROTOCOL": "SSL",
        "WAITROOM_KAFKA_SSL_CAFILE": str(ca or pki.ca.cert),
        "WAITROOM_KAFKA_SSL_CERTFILE": str(pki.client.cert),
        "WAITROOM_KAFKA_SSL_KEYFILE": str(pki.client.key),
        "WAITROOM_KAFKA_SSL_PASSWORD_FILE": str(pki.password_file),
    }


@pytest.fixture
def tls_env(process_env: dict[str, str], pki: Pki, tls_broker: TlsBroker) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    return {
        **process_env,
        **tls_settings(pki, tls_broker.bootstrap),
        "WAITROOM_CONSUMER_GROUP": f"tls-{tag}",
        "WAITROOM_ADMITTER_SWEEP_SECONDS": "0.2",
        "WAITROOM_ADMITTER_GRACE_SECONDS": "5",
        "WAITROOM_CONSUMER_GRACE_SECONDS": "10",
    }


class Processes:
    """Subprocesses of one test, with their logs; whatever is left is killed at the end."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def start(self, env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
        log_path = self.workdir / f"{args[0]}-{len(self.started)}.log"
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                [*WAITROOM, *args], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        self.started.append((proc, log_path))
        return proc

    def log(self, proc: subprocess.Popen[bytes]) -> str:
        return next(path for p, path in self.started if p is proc).read_text(errors="replace")

    def kill_all(self) -> None:
        for proc, _ in self.started:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    started = Processes(tmp_path)
    yield started
    started.kill_all()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(0.1)
    return value


def read_ready(env: dict[str, str], event_id: str, count: int) -> list[Any]:
    """``count`` queue.ready records of ``event_id``, read over TLS with the same options."""
    common = settings_mod.load(settings_mod.CommonSettings, env)
    consumer = kafka.KafkaConsumer(**shared_kafka.client_options(common), enable_auto_commit=False)
    try:
        partitions = wait_until(lambda: consumer.partitions_for_topic(QUEUE_READY), "queue.ready")
        consumer.assign([kafka.TopicPartition(QUEUE_READY, p) for p in sorted(partitions)])
        consumer.seek_to_beginning()
        found: list[Any] = []

        def poll() -> bool:
            for batch in consumer.poll(timeout_ms=200).values():
                found.extend(r for r in batch if r.key == event_id.encode())
            return len(found) >= count

        wait_until(poll, f"{count} queue.ready records of {event_id}")
        return found
    finally:
        consumer.close()


def statuses(redis_url: str, event_id: str, sessions: list[str]) -> list[Status | None]:
    async def read(scripts: Scripts) -> list[Status | None]:
        result = await scripts.status(event_id, sessions)
        return [view.record.status if view.record else None for view in result.sessions]

    return with_scripts(redis_url, read)


def test_the_admitter_relays_and_the_consumer_consumes_over_mutual_tls(
    tls_env: dict[str, str],
    tls_broker: TlsBroker,
    redis_url: str,
    event_id: str,
    processes: Processes,
) -> None:
    async def prepare(scripts: Scripts) -> list[str]:
        await EventStore(scripts.redis, scripts).create(EventConfig(event_id, max_concurrent=10))
        return [(await scripts.join(event_id, f"user-{i}")).session_id for i in range(3)]

    sessions = with_scripts(redis_url, prepare)
    handshakes_before = tls_broker.terminator.handshakes
    admitter = processes.start(tls_env, "admitter")
    consumer = processes.start(tls_env, "consumer")

    ready = read_ready(tls_env, event_id, 3)
    assert sorted(r.value.decode().count(event_id) > 0 for r in ready) == [True] * 3

    # The operator's command, a third kind of client, reports the outcome over TLS too.
    result = subprocess.run(
        [*WAITROOM, "checkout", "complete", sessions[0]],
        env=tls_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: statuses(redis_url, event_id, sessions[:1]) == [Status.COMPLETED],
        "the consumer to apply checkout.completed",
    )
    assert statuses(redis_url, event_id, sessions[1:]) == [Status.READY, Status.READY]

    assert tls_broker.terminator.handshakes > handshakes_before
    # Only the waitroom's client certificate ever got through: nothing spoke plaintext.
    assert tls_broker.terminator.peers == {"waitroom-client"}
    for proc in (admitter, consumer):
        proc.terminate()
        assert proc.wait(60) == 0, processes.log(proc)


def test_a_broker_certificate_from_another_ca_is_refused_in_one_line(
    tls_env: dict[str, str], pki: Pki, tls_broker: TlsBroker, processes: Processes
) -> None:
    env = {**tls_env, "WAITROOM_KAFKA_SSL_CAFILE": str(pki.other_ca.cert)}
    result = subprocess.run(
        [*WAITROOM, "checkout", "complete", "x.1.ZXY", "--user-id", "u", "--event-id", "e"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "not trusted" in lines[0] and "WAITROOM_KAFKA_SSL_CAFILE" in lines[0], lines[0]

    # A worker treats it as Kafka being unavailable (a broker's certificate can be rotated
    # while it runs): it keeps admitting, retries, and says why once, not once per attempt.
    admitter = processes.start(env, "admitter")
    wait_until(lambda: "not trusted" in processes.log(admitter), "the admitter's log line")
    time.sleep(2)  # several retries
    log = processes.log(admitter)
    # Once per component that talks to Kafka (the relay, the recovery check), never per attempt.
    said = [line for line in log.splitlines() if "not trusted" in line]
    assert len(said) == len({line.split()[3] for line in said}) >= 1, log
    assert "Traceback" not in log
    admitter.terminate()
    assert admitter.wait(60) == 0, processes.log(admitter)


def _start(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WAITROOM, command], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("command", ["admitter", "consumer"])
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"WAITROOM_KAFKA_SECURITY_PROTOCOL": "TLS"}, "WAITROOM_KAFKA_SECURITY_PROTOCOL='TLS'"),
        (
            {
                "WAITROOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "WAITROOM_KAFKA_SASL_MECHANISM": "MD5",
            },
            "WAITROOM_KAFKA_SASL_MECHANISM='MD5'",
        ),
        (
            {
                "WAITROOM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
                "WAITROOM_KAFKA_SASL_MECHANISM": "PLAIN",
                "WAITROOM_KAFKA_SASL_USERNAME": "waitroom",
            },
            "needs WAITROOM_KAFKA_SASL_PASSWORD",
        ),
        ({"WAITROOM_KAFKA_SSL_KEYFILE": "<broker key>"}, "is not the key of the certificate"),
        ({"WAITROOM_KAFKA_SSL_CAFILE": "/nonexistent/ca.crt"}, "WAITROOM_KAFKA_SSL_CAFILE="),
        ({"WAITROOM_KAFKA_SSL_PASSWORD": "wrong"}, "set WAITROOM_KAFKA_SSL_PASSWORD or"),
        ({"WAITROOM_KAFKA_SECURITY_PROTOCOL": "PLAINTEXT"}, "does not use it"),
    ],
)
def test_bad_security_settings_stop_the_process_at_once_naming_the_setting(
    tls_env: dict[str, str], pki: Pki, command: str, change: dict[str, str], named: str
) -> None:
    change = {k: v.replace("<broker key>", str(pki.broker.key)) for k, v in change.items()}
    result = _start(command, {**tls_env, **change})
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and named in line, line


def test_a_wrong_key_password_names_the_password_setting(
    tls_env: dict[str, str], tmp_path: Path
) -> None:
    wrong = tmp_path / "password"
    wrong.write_text("not-the-password")
    result = _start("admitter", {**tls_env, "WAITROOM_KAFKA_SSL_PASSWORD_FILE": str(wrong)})
    assert result.returncode == 3, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "WAITROOM_KAFKA_SSL_KEYFILE=" in line and "WAITROOM_KAFKA_SSL_PASSWORD" in line, line


# --- the one function that builds client options: every protocol and SASL mechanism ---------

PROTOCOLS = ["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
MECHANISMS = ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def _settings(protocol: str, mechanism: str = "", **extra: str) -> settings_mod.CommonSettings:
    env = {"WAITROOM_KAFKA_SECURITY_PROTOCOL": protocol, **extra}
    if protocol.startswith("SASL"):
        env.update(
            WAITROOM_KAFKA_SASL_MECHANISM=mechanism,
            WAITROOM_KAFKA_SASL_USERNAME="waitroom",
            WAITROOM_KAFKA_SASL_PASSWORD="s3cret pass",
        )
    return settings_mod.load(settings_mod.CommonSettings, env)


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [("PLAINTEXT", ""), ("SSL", "")]
    + [(p, m) for p in ("SASL_PLAINTEXT", "SASL_SSL") for m in MECHANISMS],
)
def test_client_options_carry_the_protocol_and_only_what_it_uses(
    protocol: str, mechanism: str
) -> None:
    ssl_files = {"WAITROOM_KAFKA_SSL_CAFILE": "/ca.pem"} if "SSL" in protocol else {}
    options = shared_kafka.client_options(_settings(protocol, mechanism, **ssl_files))
    assert options["security_protocol"] == protocol
    assert options["bootstrap_servers"] == ["127.0.0.1:9092"]
    if protocol.startswith("SASL"):
        assert options["sasl_mechanism"] == mechanism
        assert options["sasl_plain_username"] == "waitroom"
        assert options["sasl_plain_password"] == "s3cret pass"
    else:
        assert not any(key.startswith("sasl_") for key in options)
    if protocol.endswith("SSL"):
        assert options["ssl_cafile"] == "/ca.pem"
        assert options["ssl_certfile"] is None and options["ssl_password"] is None
    else:
        assert not any(key.startswith("ssl_") for key in options)


@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_every_client_is_built_with_the_options_and_kafka_python_knows_them(
    protocol: str, mechanism: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each builder hands the options to kafka-python's class (recorded here, as no broker
    speaks SASL), and each option is one that class accepts."""
    common = _settings(protocol, mechanism)
    tuning = settings_mod.KafkaClientSettings()
    built: dict[str, dict[str, Any]] = {}
    monkeypatch.setattr(shared_kafka, "probe_tls", lambda *args: None)  # no broker here

    def recorder(name: str, real: Any) -> Any:
        unknown = set()

        class Recorded:
            def __init__(self, **options: Any) -> None:
                unknown.update(set(options) - set(real.DEFAULT_CONFIG))
                assert not unknown, f"{name} does not accept {unknown}"
                built[name] = options

            def list_topics(self) -> list[str]:
                return []

            def create_topics(self, topics: Any) -> None:
                pass

            def close(self) -> None:
                pass

        return Recorded

    monkeypatch.setattr(kafka, "KafkaProducer", recorder("producer", kafka.KafkaProducer))
    monkeypatch.setattr(kafka, "KafkaConsumer", recorder("consumer", kafka.KafkaConsumer))
    monkeypatch.setattr(
        kafka.admin, "KafkaAdminClient", recorder("admin", kafka.admin.KafkaAdminClient)
    )
    shared_kafka.kafka_producer(common, tuning, client_id="t")
    shared_kafka.kafka_consumer(common, tuning, settings_mod.ConsumerSettings())
    shared_kafka.ensure_topics(common, {"t": 1}, explicit=True)
    expected = shared_kafka.client_options(common)
    for name in ("producer", "consumer", "admin"):
        assert {k: built[name][k] for k in expected} == expected, name


@pytest.mark.parametrize("mechanism", MECHANISMS)
def test_kafka_pythons_sasl_implementation_takes_the_credentials(mechanism: str) -> None:
    """The options reach kafka-python's own SASL code, which puts the user name in its first
    message (PLAIN sends the password with it; SCRAM only proves it later)."""
    from kafka.net.sasl import get_sasl_mechanism

    options = shared_kafka.client_options(_settings("SASL_SSL", mechanism))
    sasl = get_sasl_mechanism(mechanism)(**options)
    first: bytes = sasl.auth_bytes()
    assert b"waitroom" in first
    assert (b"s3cret pass" in first) == (mechanism == "PLAIN")


def test_without_tls_there_is_no_handshake_probe() -> None:
    assert shared_kafka.tls_context(_settings("SASL_PLAINTEXT", "PLAIN")) is None
    context = shared_kafka.tls_context(_settings("SASL_SSL", "PLAIN"))
    assert context is not None and context.check_hostname
