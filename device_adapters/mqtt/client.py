"""paho-mqtt 2.x driven by the asyncio loop — the only module that imports paho.

How (the way empicano/aiomqtt 2.5 does it): paho's socket callbacks register its socket with
`loop.add_reader`/`add_writer`, a `loop.call_later` timer runs `loop_misc` (keep-alive), and
paho never gets a network thread of its own. Only the blocking TCP/TLS connect runs in the
default executor. paho callbacks do nothing but resolve futures and feed one bounded queue.

Each connection attempt gets a fresh paho `Client` (a "generation"): paho keeps in-flight
QoS state only in memory, so after a drop we rely on the broker's persistent session
(inbound) and on the caller's outbox (outbound), never on paho's leftovers. An `ack` or a
PUBACK from a previous generation is ignored — the broker redelivers that message anyway.

Back-pressure inbound is the MQTT 5 Receive Maximum (§3.1.2.11.3): the broker sends at most
`receive_maximum` unacknowledged QoS 1 messages, so the queue (of that size) cannot fill. If a
broker ignores it, we disconnect rather than drop: the session redelivers on reconnect.

paho's return codes and exceptions become `device_adapters.mqtt.errors` exceptions here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import random
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from device_adapters.mqtt.backoff import Backoff
from device_adapters.mqtt.errors import (
    ConnectRefused,
    MqttConnectionError,
    MqttOperationRefused,
    NotConnected,
)
from device_adapters.mqtt.frames import PlainPublish, next_frame, plain_publish, puback
from gateway.clock import utc_now
from gateway.errors import ConfigError
from gateway.settings import MqttSettings, UpstreamSettings

log = logging.getLogger(__name__)

MAX_PACKET_ID = 65_535  # MQTT 5 §2.2.1: 16-bit packet identifiers
_READS_PER_WAKEUP = 64  # packets handled per readable event before yielding to the loop
_MISC_INTERVAL_S = 1.0
_RECV_BYTES = 64 * 1024
_GATHER_BYTES = 4 * 1024  # packets up to this size are gathered into one send


class ConnectionState(StrEnum):
    IDLE = "idle"  # run() not running
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKING_OFF = "backing_off"


@dataclass(frozen=True, slots=True, kw_only=True)
class BrokerConfig:
    host: str
    port: int
    client_id: str
    tls: bool = False
    username: str = ""
    password: str = field(default="", repr=False)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    keepalive_s: int = 30
    clean_start: bool = True
    session_expiry_s: int = 0  # MQTT 5 §3.1.2.11.2; > 0 keeps the session across drops
    subscriptions: tuple[str, ...] = ()
    receive_maximum: int = 1000  # unacked inbound QoS 1 messages the broker may send us
    # Payload bytes of unacked inbound messages held at most: socket reads pause beyond it
    # (Receive Maximum counts messages, and each may be large).
    max_unacked_bytes: int = 32 * 1024 * 1024
    max_inflight: int = 100  # unacked outbound QoS 1 messages we send
    connect_timeout_s: float = 10.0
    backoff: Backoff = field(default_factory=Backoff)
    config_key: str = "mqtt"  # names the settings section in errors

    def __post_init__(self) -> None:
        if not self.host or not 0 < self.port <= 65_535:
            raise ConfigError(f"{self.config_key}.url", f"bad host/port {self.host}:{self.port}")
        if not self.client_id and not self.clean_start:
            raise ConfigError(
                f"{self.config_key}.client_id", "a persistent session needs a fixed client id"
            )
        for name in ("receive_maximum", "max_inflight"):
            value = getattr(self, name)
            if not 0 < value <= MAX_PACKET_ID:
                raise ConfigError(f"{self.config_key}.{name}", f"must be 1..65535, got {value}")
        if self.max_unacked_bytes <= 0:
            raise ConfigError(f"{self.config_key}.max_unacked_bytes", "must be > 0")

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"


def parse_broker_url(url: str, key: str) -> tuple[str, int, bool]:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` -> (host, port, tls)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise ConfigError(key, f"must be mqtt://host:port or mqtts://host:port, got {url!r}")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError:
        raise ConfigError(key, f"bad port in {url!r}") from None
    return parts.hostname, port, tls


def consumer_config(settings: MqttSettings) -> BrokerConfig:
    """The hub's subscriber: fixed client id, persistent session, QoS 1 subscriptions."""
    host, port, tls = parse_broker_url(settings.url, "mqtt.url")
    return BrokerConfig(
        host=host,
        port=port,
        tls=tls,
        client_id=settings.client_id,
        username=settings.username,
        password=settings.password,
        ca_file=settings.ca_file,
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        keepalive_s=settings.keepalive_s,
        clean_start=False,
        session_expiry_s=settings.session_expiry_s,
        subscriptions=settings.topics,
        receive_maximum=settings.receive_maximum,
    )


def upstream_config(settings: UpstreamSettings, *, hub_id: str) -> BrokerConfig:
    """The forwarder's publisher: no subscriptions, so a clean session each time; the
    durable state is the hub's outbox."""
    host, port, tls = parse_broker_url(settings.url, "upstream.url")
    return BrokerConfig(
        host=host,
        port=port,
        tls=tls,
        client_id=settings.client_id or f"{hub_id}-upstream",
        username=settings.username,
        password=settings.password,
        ca_file=settings.ca_file,
        cert_file=settings.cert_file,
        key_file=settings.key_file,
        clean_start=True,
        max_inflight=settings.max_inflight,
        config_key="upstream",
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class InboundMessage:
    topic: str
    payload: bytes = field(repr=False)
    qos: int
    mid: int
    duplicate: bool  # the broker says it may have sent this before (MQTT 5 §3.3.1.1)
    retain: bool
    generation: int  # which connection delivered it; acks only go back on that one


@dataclass(frozen=True, slots=True, kw_only=True)
class ConnectionStatus:
    """A snapshot for /healthz."""

    state: ConnectionState
    broker: str
    client_id: str
    connects: int
    last_error: str
    since: datetime


def _build_tls(config: BrokerConfig) -> ssl.SSLContext | None:
    if not config.tls:
        return None
    try:
        context = ssl.create_default_context(cafile=config.ca_file or None)
        if config.cert_file:
            context.load_cert_chain(config.cert_file, config.key_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"{config.config_key}.ca_file", f"cannot load TLS files: {exc}") from None
    return context


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Mark a failed future's exception as seen (its awaiter may have gone)."""
    if not future.cancelled():
        future.exception()


class _BufferedClient(paho.Client):
    """paho does a system call per packet header byte read and per packet written; under
    load (a PUBACK per message) those calls cost as much as the rest of the hub's work.

    Reading: take whatever the socket holds, up to `_RECV_BYTES`, in one call and serve
    paho's small reads from it. The reader must ask `buffered()` before waiting for the
    socket again: the next packet may be here already.

    Writing: the small packets paho writes in one `loop_write()` are gathered and sent in
    one call at its end; a large one with nothing pending goes straight out. What the
    socket does not take waits, `want_write()` stays true meanwhile (so the socket stays
    registered for writing), and a socket is flushed before paho closes it (so a
    DISCONNECT goes out).

    Decoding: a plain PUBLISH (QoS 0 or 1, no properties: what devices send) that lies
    whole in the read buffer is decoded by `frames` and handed to `on_plain_publish`,
    without paho's per-message `MQTTMessage`, `Properties`, topic matching and debug
    logging (together more work than the rest of the hub's per-message work on the loop).
    Every other packet, and a PUBLISH cut by the end of the buffer, goes through paho.
    Likewise `send_puback` gathers a PUBACK's four bytes without paho's packet queue.

    These override paho 2.x internals (`_sock_recv`, `_sock_send`, `_packet_read`,
    `_packet_write`, `_sock_close`, and the `_in_packet` and `_last_bytes_received` they
    keep): pyproject.toml keeps paho-mqtt below 3, and the tests against a real Mosquitto
    go through every one of them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rx = b""
        self._rx_pos = 0
        self._tx = bytearray()
        self.on_plain_publish: Callable[[PlainPublish], None] | None = None

    def buffered(self) -> bool:
        return self._rx_pos < len(self._rx)

    def _packet_read(self) -> MQTTErrorCode:
        if self._in_packet["command"] == 0 and self.on_plain_publish is not None:
            frame = next_frame(self._rx, self._rx_pos)
            if frame is not None:
                publish = plain_publish(frame.header, self._rx[frame.start : frame.end])
                if publish is not None:
                    self._rx_pos = frame.end
                    with self._msgtime_mutex:  # the keep-alive's view of the connection
                        self._last_bytes_received = paho.time_func()
                    self.on_plain_publish(publish)
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._packet_read()

    def _sock_recv(self, bufsize: int) -> bytes:
        if self._rx_pos >= len(self._rx):
            data = super()._sock_recv(max(bufsize, _RECV_BYTES))
            if len(data) <= bufsize:
                return data  # also b"": the connection closed
            self._rx, self._rx_pos = data, 0
        start = self._rx_pos
        self._rx_pos = min(start + bufsize, len(self._rx))
        return self._rx[start : self._rx_pos]

    def _sock_send(self, buf: bytes | bytearray) -> int:
        if not self._tx and len(buf) > _GATHER_BYTES:
            return super()._sock_send(buf)
        if self.socket() is None:
            raise ConnectionError("no socket")
        self._tx += buf
        return len(buf)

    def send_puback(self, mid: int) -> MQTTErrorCode:
        """Acknowledge a QoS 1 message (what `ack(mid, 1)` does, with less work): gathered
        and sent when the socket is writable. While paho has packets of its own queued,
        through its queue, so that every packet leaves in the order it was sent."""
        if self._out_packet or self._sock is None:
            return self.ack(mid, 1)
        self._tx += puback(mid)
        self._call_socket_register_write()
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _flush(self) -> None:
        """Send what `_sock_send` gathered, as far as the socket takes it."""
        sent_any = False
        while self._tx:
            try:
                sent = super()._sock_send(self._tx)
            except BlockingIOError:
                break  # paho has asked to be told when the socket is writable again
            del self._tx[:sent]
            sent_any = True
        if sent_any:
            with self._msgtime_mutex:  # the keep-alive's view: we have sent something
                self._last_msg_out = paho.time_func()

    def _packet_write(self) -> MQTTErrorCode:
        rc = super()._packet_write()
        try:
            self._flush()
        except OSError as exc:
            log.info("MQTT send failed: %s", exc)
            return MQTTErrorCode.MQTT_ERR_CONN_LOST
        return rc

    def want_write(self) -> bool:
        return bool(self._tx) or super().want_write()

    def _sock_close(self) -> None:
        with contextlib.suppress(OSError):
            self._flush()
        super()._sock_close()


class _Generation:
    """One paho client and one connection attempt; dies with its socket."""

    def __init__(
        self, number: int, client: _BufferedClient, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.number = number
        self.client = client
        self.connack: asyncio.Future[bool] = loop.create_future()  # -> session_present
        self.lost: asyncio.Future[str] = loop.create_future()  # -> why
        self.subscribes: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self.publishes: dict[int, tuple[asyncio.Future[None], str]] = {}
        self.fd: int | None = None
        self.misc: asyncio.TimerHandle | None = None
        self.events = 0  # callbacks seen; tells the reader when a read made progress
        self.closed = False
        self.reading_paused = False  # socket reads stopped: too much unacked inbound
        self.unacked_bytes = 0  # payload bytes delivered on this connection, not yet acked


class MqttConnection:
    """A long-lived MQTT 5 connection that reconnects by itself.

    `run()` owns the connection until cancelled; meanwhile `receive()` yields inbound
    messages (subscriptions are renewed after every connect), `ack()` sends their PUBACK,
    and `publish()`/`start_publish()` send QoS 1 messages. `status()` is for /healthz.
    """

    def __init__(self, config: BrokerConfig, *, rng: random.Random | None = None) -> None:
        self.config = config
        self._rng = rng or random.Random()
        self._tls = _build_tls(config)
        self._queue: asyncio.Queue[InboundMessage] = asyncio.Queue(config.receive_maximum)
        # Messages beyond Receive Maximum, held while socket reads are paused (a few at most).
        self._overflow: collections.deque[InboundMessage] = collections.deque()
        self._connected = asyncio.Event()
        self._gen: _Generation | None = None
        self._numbers = 0
        self._state = ConnectionState.IDLE
        self._since = utc_now()
        self._connects = 0
        self._last_error = ""
        self._running = False
        self._loop_thread = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.overflows = 0  # inbound messages beyond Receive Maximum (broker misbehaving)

    # -- observable state ------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    @property
    def connected(self) -> bool:
        return self._state is ConnectionState.CONNECTED

    def status(self) -> ConnectionStatus:
        return ConnectionStatus(
            state=self._state,
            broker=self.config.broker,
            client_id=self.config.client_id,
            connects=self._connects,
            last_error=self._last_error,
            since=self._since,
        )

    async def wait_connected(self) -> None:
        await self._connected.wait()

    def _set_state(self, state: ConnectionState) -> None:
        if state is not self._state:
            self._state = state
            self._since = utc_now()

    # -- the connection loop ---------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe, and keep doing so with capped jittered backoff; never
        returns except by cancellation (then disconnects cleanly, keeping the session)."""
        if self._running:
            raise RuntimeError("MqttConnection.run() is already running")
        self._running = True
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        attempt = 0
        try:
            while True:
                self._set_state(ConnectionState.CONNECTING)
                gen = self._new_generation()
                try:
                    await self._open(gen)
                except (MqttConnectionError, MqttOperationRefused) as exc:
                    self._last_error = str(exc)
                    log.warning("%s", exc)
                    self._close(gen, graceful=False)
                else:
                    attempt = 0
                    self._connects += 1
                    self._set_state(ConnectionState.CONNECTED)
                    self._connected.set()
                    # Shielded: cancelling run() must not cancel `lost`, or the clean
                    # DISCONNECT in `finally` would think the connection already gone.
                    reason = await asyncio.shield(gen.lost)
                    self._connected.clear()
                    self._last_error = f"connection lost: {reason}"
                    log.warning("MQTT %s %s", self.config.broker, self._last_error)
                    self._close(gen, graceful=False)
                self._set_state(ConnectionState.BACKING_OFF)
                await asyncio.sleep(self.config.backoff.delay(attempt, self._rng))
                attempt += 1
        finally:
            self._connected.clear()
            if self._gen is not None:
                self._close(self._gen, graceful=True)
            self._set_state(ConnectionState.IDLE)
            self._running = False

    def _new_generation(self) -> _Generation:
        assert self._loop is not None
        self._numbers += 1
        client = _BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self.config.client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
            reconnect_on_failure=False,
        )
        gen = _Generation(self._numbers, client, self._loop)
        client.user_data_set(gen)
        client.connect_timeout = self.config.connect_timeout_s
        client.max_inflight_messages_set(self.config.max_inflight)
        if self.config.username:
            client.username_pw_set(self.config.username, self.config.password or None)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_plain_publish = functools.partial(self._on_plain_publish, gen)
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        self._gen = gen
        return gen

    async def _open(self, gen: _Generation) -> None:
        assert self._loop is not None
        properties = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if self.config.session_expiry_s > 0:
            properties.SessionExpiryInterval = self.config.session_expiry_s
        properties.ReceiveMaximum = self.config.receive_maximum
        try:
            # The TCP connect and TLS handshake block: the one thing done off the loop.
            await self._loop.run_in_executor(None, self._connect_blocking, gen, properties)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise MqttConnectionError(self.config.broker, f"connect failed: {exc}") from None
        gen.misc = self._loop.call_later(_MISC_INTERVAL_S, self._misc, gen)
        session_present = await self._until(gen, gen.connack, "CONNACK")
        log.info(
            "MQTT connected to %s as %s (session present: %s)",
            self.config.broker,
            self.config.client_id,
            session_present,
        )
        if self.config.subscriptions:
            # Subscribe every time: a broker that lost our session (or a first connect)
            # needs it, and renewing an existing subscription is harmless.
            options = SubscribeOptions(qos=1)
            result, mid = gen.client.subscribe([(t, options) for t in self.config.subscriptions])
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise NotConnected(self.config.broker, f"SUBSCRIBE not sent: {result.name}")
            future: asyncio.Future[list[ReasonCode]] = self._loop.create_future()
            gen.subscribes[mid] = future
            codes = await self._until(gen, future, "SUBACK")
            for topic, code in zip(self.config.subscriptions, codes, strict=False):
                if code.is_failure:
                    raise MqttOperationRefused("SUBSCRIBE", topic, code.value, code.getName())

    def _connect_blocking(self, gen: _Generation, properties: Properties) -> None:
        """Runs in the executor thread."""
        gen.client.connect(
            self.config.host,
            self.config.port,
            keepalive=self.config.keepalive_s,
            clean_start=self.config.clean_start,
            properties=properties,
        )
        if gen.closed:  # run() was cancelled meanwhile; nobody will watch this socket
            sock = gen.client.socket()
            if sock is not None:
                sock.close()

    async def _until(self, gen: _Generation, future: asyncio.Future[Any], what: str) -> Any:
        done, _ = await asyncio.wait(
            (future, gen.lost),
            timeout=self.config.connect_timeout_s,
            return_when=asyncio.FIRST_COMPLETED,
        )
        if future in done:
            return future.result()
        if gen.lost in done:
            raise NotConnected(self.config.broker, f"lost before {what}: {gen.lost.result()}")
        raise MqttConnectionError(
            self.config.broker, f"no {what} in {self.config.connect_timeout_s:g}s"
        )

    def _lose(self, gen: _Generation, reason: str) -> None:
        if gen is self._gen:
            self._connected.clear()  # at once, so waiters do not spin until run() resumes
        if not gen.lost.done():
            gen.lost.set_result(reason)
        self._fail_pending(gen, reason)

    def _fail_pending(self, gen: _Generation, reason: str) -> None:
        error = NotConnected(self.config.broker, f"connection lost before the ack: {reason}")
        for future, _topic in gen.publishes.values():
            if not future.done():
                future.set_exception(error)
                future.add_done_callback(_retrieve)
        gen.publishes.clear()
        for sub in gen.subscribes.values():
            if not sub.done():
                sub.set_exception(error)
                sub.add_done_callback(_retrieve)
        gen.subscribes.clear()

    def _close(self, gen: _Generation, *, graceful: bool) -> None:
        """Tear a generation down without awaiting (safe in `finally` after cancel)."""
        if gen.closed:
            return
        gen.closed = True
        if gen.misc is not None:
            gen.misc.cancel()
        client = gen.client
        if graceful and gen.connack.done() and not gen.lost.done():
            # DISCONNECT with reason 0 keeps the session (MQTT 5 §3.14.2.2.2 keeps the
            # CONNECT's expiry); paho closes the socket once the packet is written.
            client.disconnect()
            with contextlib.suppress(OSError):
                client.loop_write()
        sock = client.socket()
        if sock is not None and self._loop is not None:
            fd = sock.fileno()
            if fd >= 0:
                self._loop.remove_reader(fd)
                self._loop.remove_writer(fd)
            sock.close()
        self._lose(gen, "closed")
        # The inbound queue holds only this generation's messages now; they cannot be
        # acked any more and the broker redelivers them, so drop them.
        dropped = 0
        while not self._queue.empty():
            self._queue.get_nowait()
            dropped += 1
        dropped += len(self._overflow)
        self._overflow.clear()
        if dropped:
            log.info("dropped %d unacked inbound messages of a dead connection", dropped)
        for future in (gen.connack,):
            if not future.done():
                future.cancel()

    # -- paho callbacks (they only resolve futures and feed the queue) ----------------

    def _on_connect(
        self,
        client: paho.Client,
        gen: _Generation,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        gen.events += 1
        if gen.connack.done():
            return
        if reason.is_failure:
            gen.connack.set_exception(
                ConnectRefused(self.config.broker, reason.value, reason.getName())
            )
            gen.connack.add_done_callback(_retrieve)
        else:
            gen.connack.set_result(flags.session_present)

    def _on_disconnect(
        self,
        client: paho.Client,
        gen: _Generation,
        flags: paho.DisconnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        gen.events += 1
        self._lose(gen, reason.getName())

    def _on_message(self, client: paho.Client, gen: _Generation, message: paho.MQTTMessage) -> None:
        gen.events += 1
        if gen.closed:
            return
        self._deliver(
            gen,
            InboundMessage(
                topic=message.topic,
                payload=bytes(message.payload),
                qos=message.qos,
                mid=message.mid,
                duplicate=bool(message.dup),
                retain=bool(message.retain),
                generation=gen.number,
            ),
        )

    def _on_plain_publish(self, gen: _Generation, publish: PlainPublish) -> None:
        gen.events += 1
        if gen.closed:
            return
        self._deliver(
            gen,
            InboundMessage(
                topic=publish.topic,
                payload=publish.payload,
                qos=publish.qos,
                mid=publish.mid,
                duplicate=publish.dup,
                retain=publish.retain,
                generation=gen.number,
            ),
        )

    def _deliver(self, gen: _Generation, inbound: InboundMessage) -> None:
        gen.unacked_bytes += len(inbound.payload)
        try:
            self._queue.put_nowait(inbound)
        except asyncio.QueueFull:
            # The broker sent more than our Receive Maximum (Mosquitto 2.0 does so when it
            # resends a persisted session after a restart). Keep the message and stop
            # reading the socket until the consumer catches up: TCP back-pressure, bounded
            # memory, and no reconnect loop (a reconnect would be flooded the same way).
            self.overflows += 1
            self._overflow.append(inbound)
            log.warning(
                "MQTT broker sent more than Receive Maximum (%d); pausing reads",
                self.config.receive_maximum,
            )
        if self._too_much_unacked(gen):
            self._pause_reading(gen)

    def _on_subscribe(
        self,
        client: paho.Client,
        gen: _Generation,
        mid: int,
        codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        gen.events += 1
        future = gen.subscribes.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)

    def _on_publish(
        self,
        client: paho.Client,
        gen: _Generation,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        gen.events += 1
        entry = gen.publishes.pop(mid, None)
        if entry is None:
            return
        future, topic = entry
        if future.done():
            return
        # 0x10 "No matching subscribers" is a success code (< 0x80, MQTT 5 §3.4.2.1).
        if reason.is_failure:
            future.set_exception(
                MqttOperationRefused("PUBLISH", topic, reason.value, reason.getName())
            )
            future.add_done_callback(_retrieve)
        else:
            future.set_result(None)

    def _call_in_loop(self, func: Callable[..., object], *args: Any) -> None:
        """paho calls socket callbacks from the executor thread during connect."""
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            func(*args)
        else:
            self._loop.call_soon_threadsafe(func, *args)

    def _on_socket_open(self, client: paho.Client, gen: _Generation, sock: Any) -> None:
        self._call_in_loop(self._watch, gen, sock.fileno(), False)

    def _on_socket_register_write(self, client: paho.Client, gen: _Generation, sock: Any) -> None:
        self._call_in_loop(self._watch, gen, sock.fileno(), True)

    def _watch(self, gen: _Generation, fd: int, write: bool) -> None:
        assert self._loop is not None
        if gen.closed or fd < 0:
            return  # run() was cancelled while the executor was still connecting
        gen.fd = fd
        if write:
            self._loop.add_writer(fd, self._writable, gen)
        else:
            self._loop.add_reader(fd, self._readable, gen)

    def _on_socket_close(self, client: paho.Client, gen: _Generation, sock: Any) -> None:
        assert self._loop is not None
        fd = sock.fileno()
        if fd >= 0:
            self._call_in_loop(self._loop.remove_reader, fd)
            self._call_in_loop(self._loop.remove_writer, fd)

    def _on_socket_unregister_write(self, client: paho.Client, gen: _Generation, sock: Any) -> None:
        assert self._loop is not None
        fd = sock.fileno()
        if fd >= 0:
            self._call_in_loop(self._loop.remove_writer, fd)

    def _readable(self, gen: _Generation) -> None:
        # paho reads one packet per loop_read() here; read on while callbacks show
        # progress (bounded, so one busy connection cannot starve the loop).
        for _ in range(_READS_PER_WAKEUP):
            before = gen.events
            try:
                rc = gen.client.loop_read()
            except Exception as exc:  # a foreign error at the edge: the connection is gone
                self._lose(gen, f"read failed: {exc!r}")
                return
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._lose(gen, f"read: {rc.name}")
                return
            if gen.client.socket() is None or gen.reading_paused:
                return
            if gen.events == before and not gen.client.buffered():
                return
        self._read_buffered_soon(gen)

    def _read_buffered_soon(self, gen: _Generation) -> None:
        """Packets already read off the socket will not make it readable again."""
        if gen.client.buffered() and not gen.closed and self._loop is not None:
            self._loop.call_soon(self._readable, gen)

    def _writable(self, gen: _Generation) -> None:
        try:
            rc = gen.client.loop_write()
        except Exception as exc:
            self._lose(gen, f"write failed: {exc!r}")
            return
        if rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._lose(gen, f"write: {rc.name}")

    def _misc(self, gen: _Generation) -> None:
        if gen.closed:
            return
        rc = gen.client.loop_misc()  # keep-alive PINGREQ, and the timeout if no PINGRESP
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self._lose(gen, f"keep-alive: {rc.name}")
            return
        assert self._loop is not None
        gen.misc = self._loop.call_later(_MISC_INTERVAL_S, self._misc, gen)

    # -- what callers use ------------------------------------------------------------

    async def receive(self) -> InboundMessage:
        """The next inbound message (waits across reconnects)."""
        message = await self._queue.get()
        while self._overflow and not self._queue.full():
            self._queue.put_nowait(self._overflow.popleft())
        if self._gen is not None:
            self._resume_if_caught_up(self._gen)
        return message

    def _too_much_unacked(self, gen: _Generation) -> bool:
        return bool(self._overflow) or gen.unacked_bytes > self.config.max_unacked_bytes

    def _resume_if_caught_up(self, gen: _Generation) -> None:
        """Resume reads once the overflow is handed on and unacked bytes are down to half
        the budget (not at the first byte under it: no pause/resume per message)."""
        if (
            gen.reading_paused
            and not self._overflow
            and gen.unacked_bytes <= self.config.max_unacked_bytes // 2
        ):
            self._resume_reading(gen)

    def _pause_reading(self, gen: _Generation) -> None:
        if not gen.reading_paused and gen.fd is not None and self._loop is not None:
            gen.reading_paused = True
            self._loop.remove_reader(gen.fd)

    def _resume_reading(self, gen: _Generation) -> None:
        gen.reading_paused = False
        if not gen.closed and gen.fd is not None and self._loop is not None:
            self._loop.add_reader(gen.fd, self._readable, gen)
            self._read_buffered_soon(gen)

    def ack(self, message: InboundMessage) -> bool:
        """Send the PUBACK; False when its connection is gone (the broker will redeliver)."""
        gen = self._gen
        if gen is None or gen.number != message.generation or gen.lost.done() or gen.closed:
            return False
        gen.unacked_bytes -= len(message.payload)
        self._resume_if_caught_up(gen)
        if message.qos == 0:
            return True
        if message.qos == 1:
            rc = gen.client.send_puback(message.mid)
        else:
            rc = gen.client.ack(message.mid, message.qos)
        return rc == MQTTErrorCode.MQTT_ERR_SUCCESS

    def start_publish(self, topic: str, payload: bytes) -> asyncio.Future[None]:
        """Send one QoS 1 PUBLISH now; the future completes on its PUBACK, or fails with
        `NotConnected` if the connection drops first (then nothing is known: resend)."""
        gen = self._gen
        if gen is None or not self.connected or gen.lost.done():
            raise NotConnected(self.config.broker, "not connected")
        if len(gen.publishes) >= self.config.max_inflight:
            raise RuntimeError(f"more than max_inflight={self.config.max_inflight} publishes")
        info = gen.client.publish(topic, payload, qos=1)
        if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise NotConnected(self.config.broker, f"PUBLISH not sent: {info.rc.name}")
        assert self._loop is not None
        future: asyncio.Future[None] = self._loop.create_future()
        gen.publishes[info.mid] = (future, topic)
        return future

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.start_publish(topic, payload)
