"""notaryd: the long-running daemon that composes the log, the HSM and the anchors.

    producers -> ingest (HTTP, unix socket) -> Sequencer (durable, group commit)
              -> Sealer (batch -> checkpoint signed in the HSM, stored)
              -> Anchorer (RFC 3161 token, S3 Object Lock) ; auditors <- api

``Notary`` holds the parts and answers the API; ``serve`` runs it as a
service: systemd notify protocol, SIGTERM drains, SIGHUP reloads the keyring
and the sources.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from aiohttp import web

from notary import store_process, systemd
from notary.api import NotAnchoredBeforeStop, NotAnchoredInTime, NotYetSealed, build_app
from notary.checkpoint import parse_signed_checkpoint
from notary.config import KEY_EVENT_SOURCE, Config, changed_keys, load_config, read_s3_credentials
from notary.entry import Entry, EntryRun, encode_run
from notary.errors import NotaryError
from notary.metrics import Metrics
from notary.note import NoteSigner
from notary.seals import Seal, SealDB
from notary.sealer import Anchorer, Publisher, Sealer, Timestamper
from notary.sequencer import DigestFinder, LogWriter, Overloaded, Sequencer
from notary.tlogproof import TlogProof
from notary.unix_ingest import serve_unix

if TYPE_CHECKING:
    from hsm.keyring import Keyring

log = logging.getLogger("notary")

_LAST_KEY_EVENT = "last_logged_key_event"


class KeyEventsNotLogged(NotaryError):
    """At start-up, the keyring's new key events could not be appended to the log: nothing was signed."""


class Notary:
    def __init__(self, config: Config, *, signers: Sequence[NoteSigner], timestamper: Timestamper,
                 publisher: Publisher):
        self.config = config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self.metrics = Metrics()
        self.writer = LogWriter(config.store_path)
        self.seals = SealDB(config.seals_path)
        self.sequencer = Sequencer(self.writer, config.limits.max_pending_entries)
        self.finder = DigestFinder(self.writer)
        self._signers = list(signers)
        self.sealer = Sealer(origin=config.origin, writer=self.writer, sequencer=self.sequencer, seals=self.seals,
                             signers=lambda: self._signers, max_entries=config.max_entries, max_age=config.max_age)
        self.anchorer = Anchorer(origin=config.origin, seals=self.seals, timestamper=timestamper,
                                 publisher=publisher, bucket=config.s3.bucket, signers=lambda: self._signers)
        self.sealer.on_seal = self.anchorer.poke
        self.anchorer.on_resign = self.sealer.resigned
        self.stopping = asyncio.Event()  # the sealer's last turn
        self.draining = asyncio.Event()  # set once the last seal is stored: the anchorer empties the outbox
        self._drain_deadline: float | None = None
        self._drained = False
        self.tasks: list[asyncio.Task] = []
        self.sealed_waiters = 0  # ?wait=sealed requests between their acknowledgement and their answer

    # -- lifecycle ---------------------------------------------------------

    async def start(self, key_events: Sequence = ()) -> None:
        """Recover, append ``key_events`` (``log_key_events``), then start sealing and anchoring.

        The store is checked against the last signed checkpoint and the
        bucket against the seals first. Nothing is signed before the key
        events are durable, so the first checkpoint signed covers the events
        of the keys that sign it: a store left with unsealed entries (a kill,
        a power loss) would otherwise be sealed, signed by a key activated
        meanwhile, while the lookup of the events runs. If the events cannot
        be appended, nothing is started and nothing is signed.
        """
        await self.sealer.start()
        await self.anchorer.start()
        sequencer = asyncio.create_task(self.sequencer.run(), name="sequencer")
        watch = asyncio.create_task(self.writer.watch(), name="store writer")
        try:
            await self.log_key_events(key_events)
        except Exception as exc:
            self.sequencer.close()  # nothing else was submitted: no ingest is open yet
            watch.cancel()
            await asyncio.gather(sequencer, watch, return_exceptions=True)
            if not isinstance(exc, NotaryError):
                raise
            raise KeyEventsNotLogged(f"the keyring's key events not logged yet ({len(key_events)}) could not be "
                                     "appended to the log, so the notary does not start (nothing is signed before "
                                     f"they are in the log): {exc}") from exc
        self.tasks = [
            sequencer,
            asyncio.create_task(self.sealer.run(self.stopping), name="sealer"),
            asyncio.create_task(self.anchorer.run(self.draining, lambda: self._drain_deadline), name="anchorer"),
            watch,
        ]

    async def stop(self, timeout: float | None = None) -> None:
        """``drain``, then ``close``."""
        await self.drain(timeout)
        self.close()

    async def drain(self, timeout: float | None = None) -> None:
        """Stop ingest, commit what was accepted, seal it, drain the outbox within ``timeout``.

        Reads still work afterwards (requests in flight finish); then
        ``close``. Whoever waits for an anchoring that did not happen in time
        is woken with ``NotAnchoredBeforeStop``.
        """
        timeout = self.config.shutdown_timeout if timeout is None else timeout
        self.tasks[3].cancel()  # the writer is closed by close(), on purpose
        self.sequencer.close()
        await self.tasks[0]  # everything accepted is durable
        self._drain_deadline = time.monotonic() + timeout
        self.stopping.set()
        await self.tasks[1]  # the final seal is stored
        self.draining.set()
        await self.tasks[2]
        self._drained = True
        async with self.anchorer.anchored:
            self.anchorer.anchored.notify_all()

    def close(self) -> None:
        self.writer.close()
        self.seals.close()

    def replace_signers(self, signers: Sequence[NoteSigner]) -> None:
        self._signers = list(signers)

    async def log_key_events(self, events: Sequence) -> int:
        """Append the digests of key events not logged yet (oldest first); return how many were appended.

        The log is looked at first: a crash between the append and the record
        of the last event logged (seals.db) leaves that record behind, and the
        next start is handed the same events again. A key event's digest is
        unique (it holds its sequence number, time and key), so one already
        in the log under the daemon's own source is that event.
        """
        if not events:
            return 0
        digests = [e.digest() for e in events]
        logged = await self.find_all(digests, KEY_EVENT_SOURCE)
        new = [d for d, hits in zip(digests, logged) if not hits]
        if new:
            await self.sequencer.submit(encode_run(new, KEY_EVENT_SOURCE))
        await self.seals.set_state(_LAST_KEY_EVENT, digests[-1])
        return len(new)

    async def last_logged_key_event(self) -> bytes | None:
        return await self.seals.get_state(_LAST_KEY_EVENT)

    # -- ingest ------------------------------------------------------------

    async def submit(self, entries: EntryRun) -> int:
        if self.anchorer.unanchored >= self.config.limits.max_unanchored_seals:
            self.metrics.inc("notary_ingest_rejected_total", reason="backpressure")
            raise Overloaded(
                f"{self.anchorer.unanchored} seals are waiting for the TSA and S3 "
                f"(limit {self.config.limits.max_unanchored_seals}); retry later", retry_after=5)
        try:
            first = await self.sequencer.submit(entries)
        except Overloaded:
            self.metrics.inc("notary_ingest_rejected_total", reason="backpressure")
            raise
        self.metrics.inc("notary_entries_acknowledged_total", entries.count)
        return first

    # -- auditor answers ---------------------------------------------------

    async def find(self, digest: bytes) -> list[int]:
        return await self.finder.find(digest)

    async def find_all(self, digests: Sequence[bytes], source: str | None = None) -> list[list[int]]:
        """For each digest, the indices of the entries holding it (of ``source`` only, if given), in log order.

        With ``source`` (a producer looking before it sends again what it got
        no answer for), first until every submission accepted before the call
        has committed or failed: one whose answer the producer never got, or
        stopped waiting for, is then found rather than still on its way.
        """
        if source is not None:
            await self.sequencer.settled()
        found = await self.finder.find_all(digests)  # one scan with the other lookups waiting meanwhile
        if source is None:
            return found

        def of_source(s) -> list[list[int]]:
            return [[i for i in hits if s.entry(i) == Entry(d, source).encode()] for d, hits in zip(digests, found)]

        return await self.writer.lookup(of_source)

    async def wait_anchored(self, index: int, timeout: float | None = None) -> None:
        """Until an anchored seal covers entry ``index``.

        ``NotAnchoredBeforeStop`` if the daemon stops first, ``NotAnchoredInTime``
        after ``timeout`` seconds (None: no bound).
        """
        def covered() -> bool:
            return self.anchorer.latest_anchored is not None and self.anchorer.latest_anchored.tree_size > index

        async with self.anchorer.anchored:
            try:
                await asyncio.wait_for(self.anchorer.anchored.wait_for(lambda: covered() or self._drained), timeout)
            except TimeoutError:
                pass
        if covered():
            return
        if self._drained:
            raise NotAnchoredBeforeStop(f"the notary stopped before entry {index} was anchored; it is durable and "
                                        "will be anchored after the restart")
        why = (f"anchoring failed: {self.anchorer.last_error}" if self.anchorer.last_error
               else f"sealing failed: {self.sealer.last_error}" if self.sealer.last_error
               else f"{self.anchorer.unanchored} seals are waiting for the TSA and S3")
        raise NotAnchoredInTime(f"entry {index} is durable but was not anchored within {timeout:g}s ({why})")

    async def tlog_proof(self, index: int, size: int | None = None) -> TlogProof:
        if size is None:
            seal = self.anchorer.latest_anchored
            if seal is None or seal.tree_size <= index:
                raise NotYetSealed(f"entry {index} is not covered by an anchored seal yet; retry shortly")
        else:
            seal = await self.seals.get(size)
            if seal is None:
                raise NotaryError(f"there is no seal at tree size {size}")
            if index >= size:
                raise NotaryError(f"entry {index} is not in the tree of size {size}")
            if not seal.anchored:  # it is waiting for the TSA and S3: the proof exists in a moment
                raise NotYetSealed(f"the seal at tree size {size} is not anchored yet; retry shortly")
        return (await self._proofs(seal, range(index, index + 1)))[0]

    async def tlog_proofs(self, indices: range) -> list[TlogProof]:
        """The tlog-proofs of ``indices`` against the latest anchored seal, read in turns of 256 on the read thread."""
        seal = self.anchorer.latest_anchored
        if seal is None or seal.tree_size < indices.stop:
            raise NotYetSealed(f"entries up to {indices.stop - 1} are not covered by an anchored seal yet; retry shortly")
        return await self._proofs(seal, indices)

    async def _proofs(self, seal: Seal, indices: range) -> list[TlogProof]:
        """The tlog-proofs of ``indices`` against ``seal``, read in turns of 256 (other reads go between)."""
        signed = parse_signed_checkpoint(seal.checkpoint)
        proofs: list[TlogProof] = []
        for start in range(indices.start, indices.stop, 256):
            part = range(start, min(start + 256, indices.stop))
            read = await self.writer.run(lambda s, part=part: [(s.inclusion_proof(i, seal.tree_size), s.entry(i))
                                                                for i in part])
            for i, (path, entry) in zip(part, read):
                if entry is None:
                    raise NotaryError(f"entry {i} was appended as a bare leaf hash and has no entry to show")
                proofs.append(TlogProof(entry=entry, index=i, path=tuple(path), signed=signed))
        return proofs

    def health_problems(self) -> list[str]:
        problems = []
        overdue = self.config.limits.anchor_overdue
        since = self.anchorer.oldest_unanchored_at
        if since is not None and time.monotonic() - since > overdue:
            problems.append(
                f"{self.anchorer.unanchored} seals have waited more than {overdue:g}s to be anchored "
                f"(last error: {self.anchorer.last_error})")
        waited = self.writer.waited()
        if waited > store_process.ANSWER_OVERDUE:
            problems.append(f"the log store's writer process has not answered for {waited:.0f}s (a stalled disk?): "
                            f"{self.sequencer.pending_entries} entries wait to be committed, none is acknowledged")
        if self.sequencer.commit_error is not None:
            problems.append(f"committing entries to the log store is failing (submissions are answered 503): "
                            f"{self.sequencer.commit_error}")
        if self.sealer.last_error is not None:
            problems.append(f"sealing is failing: {self.sealer.last_error}")
        if self.writer.status.index_error is not None:
            problems.append(f"building the digest index is failing (lookups scan the entries it misses): "
                            f"{self.writer.status.index_error}")
        if self.anchorer.integrity_alarms:
            problems.append(f"{self.anchorer.integrity_alarms} integrity alarms: a different seal object is in S3 "
                            f"at one of our keys (last: {self.anchorer.last_error})")
        return problems

    def metrics_text(self) -> str:
        m = self.metrics
        m.set("notary_log_entries", self.sequencer.size)
        m.set("notary_pending_entries", self.sequencer.pending_entries)
        m.set("notary_sealed_tree_size", self.sealer.sealed_size)
        anchored = self.anchorer.latest_anchored
        m.set("notary_anchored_tree_size", 0 if anchored is None else anchored.tree_size)
        m.set("notary_unanchored_seals", self.anchorer.unanchored)
        m.set("notary_sealed_waiters", self.sealed_waiters)
        m.set("notary_commits_total", self.sequencer.commits)
        m.set("notary_commit_failures_total", self.sequencer.commit_failures)
        m.set("notary_anchor_failures_total", self.anchorer.failures)
        m.set("notary_seal_failures_total", self.sealer.failures)
        m.set("notary_integrity_alarms_total", self.anchorer.integrity_alarms)
        status = self.writer.status
        m.set("notary_digest_index_lag_entries", max(0, self.sequencer.size - status.indexed))
        m.set("notary_digest_index_failures_total", status.index_failures)
        m.set("notary_wal_checkpoint_failures_total", status.checkpoint_failures)
        m.set("notary_store_writer_wait_seconds", self.writer.waited())
        since = self.anchorer.oldest_unanchored_at
        m.set("notary_oldest_unanchored_seal_age_seconds", 0.0 if since is None else time.monotonic() - since)
        return m.render()


# -- the service -------------------------------------------------------------


@dataclasses.dataclass
class Adapters:
    """What the daemon needs from the outside world, built from the configuration."""

    # Both come from one reading of the keyring file, so that the keys that sign and the key
    # events logged are one version of it, even while `notary keys` changes the file.
    keyring: Callable[[], Keyring]  # the keyring file as it is now, checked against the origin
    signers: Callable[[Keyring], list[NoteSigner]]  # one per active key of that keyring
    timestamper: Timestamper
    publisher: Publisher
    close: Callable[[], None]


async def build_adapters(config: Config) -> Adapters:
    """The real HSM, TSAs and S3 bucket; each refuses to start with a sentence naming what to fix."""
    from anchors.s3 import SealPublisher, make_client
    from anchors.tsa import TimestampClient, TsaEndpoint, load_roots
    from hsm.keyring import Keyring
    from hsm.pin import PinSource
    from hsm.signer import active_signers
    from hsm.token import Token, TokenConfig

    token = Token.open(TokenConfig(module=config.hsm.module, token_label=config.hsm.token_label,
                                   pin=PinSource.parse(config.hsm.pin)))

    def load_keyring() -> Keyring:
        keyring = Keyring.load(config.hsm.keyring)
        if keyring.name != config.origin:
            raise NotaryError(f"keyring {config.hsm.keyring} is for {keyring.name!r}, but origin is {config.origin!r}")
        return keyring

    endpoints = [TsaEndpoint(url=t.url, roots=load_roots(t.roots), policy=t.policy, timeout=t.timeout)
                 for t in config.tsas]
    access = secret = None
    if config.s3.credentials_file is not None:
        access, secret = read_s3_credentials(config.s3.credentials_file)
    client = make_client(config.s3.endpoint, config.s3.region, access_key=access, secret_key=secret)
    publisher = await SealPublisher.open(client, config.s3.bucket, prefix=config.s3.prefix,
                                         retention=_days(config.s3.retention_days))
    return Adapters(
        keyring=load_keyring,
        signers=lambda keyring: active_signers(token, keyring),
        timestamper=TimestampClient(endpoints),
        publisher=publisher,
        close=token.close,
    )


def _days(n: int):
    import datetime

    return datetime.timedelta(days=n)


async def serve(config_path: Path, *, on_ready: Callable[[Notary], None] | None = None) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    config = load_config(config_path)
    adapters = await build_adapters(config)
    keyring = adapters.keyring()
    notary = Notary(config, signers=adapters.signers(keyring), timestamper=adapters.timestamper,
                    publisher=adapters.publisher)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    reloading = asyncio.Lock()
    try:
        # The keyring's history is checked against what the log holds, and its
        # new events appended, before anything is signed with its keys.
        events = keyring.unlogged_events(await notary.last_logged_key_event())
        await notary.start(events)
        runner = web.AppRunner(build_app(notary), access_log=None)
        await runner.setup()
        sites = []
        if config.http_listen is not None:
            site = web.TCPSite(runner, *config.http_listen, reuse_address=True)
            try:
                await site.start()
            except OSError as exc:  # a port in use is one sentence, not a traceback
                host, port = config.http_listen
                raise NotaryError(f"cannot listen on {host}:{port} (listen.http): "
                                  f"{os.strerror(exc.errno) if exc.errno else exc}") from None
            sites.append(site)
        unix_server = await serve_unix(notary) if config.unix_socket is not None else None

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP,
                                lambda: asyncio.ensure_future(_reload(notary, config_path, adapters, reloading)))
        watchdog = asyncio.create_task(systemd.watchdog_loop(stop))
        # What start-up made (boto3's service models above all: some 100k
        # objects) lives as long as the daemon: out of the collector's reach,
        # a full collection no longer walks it (it took 55-73 ms under load,
        # stalling every request in flight; docs/PERFORMANCE.md).
        gc.collect()
        gc.freeze()
        systemd.notify("READY=1", f"STATUS=serving {config.origin}, {notary.sequencer.size} entries")
        log.info("ready: %s with %d entries, sealed at %d", config.origin, notary.sequencer.size, notary.sealer.sealed_size)
        if on_ready is not None:
            on_ready(notary)
        stopper = asyncio.ensure_future(stop.wait())
        await asyncio.wait([stopper, *notary.tasks], return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set():  # a core loop ended on its own: a bug; let systemd restart us
            stopper.cancel()
            dead = [t for t in notary.tasks if t.done()]
            for task in dead:
                exc = task.exception()
                if getattr(exc, "restart_needed", False):
                    log.critical("%s: exiting so that systemd starts the notary again with a new session; "
                                 "every acknowledged entry is durable and is sealed after the start", exc)
                else:
                    log.critical("internal loop %s ended unexpectedly: %r", task.get_name(), exc)
            systemd.notify("STOPPING=1")
            return 1

        systemd.notify("STOPPING=1")
        log.info("stopping: no new entries; sealing and anchoring what was accepted")
        for site in sites:
            await site.stop()
        if unix_server is not None:
            unix_server.close()
        await notary.drain()
        # Requests in flight (a ?wait=sealed answer building its proofs, a
        # proof on a kept-alive connection) finish before the store closes.
        await runner.cleanup()
        notary.close()
        watchdog.cancel()
        return 0
    finally:
        await adapters.timestamper.close()
        adapters.close()


# What a reload applies from the configuration file; origin and data_dir refuse a reload, and every
# other key (the HSM session, TSAs, bucket, listeners, batch, limits) is used only as the daemon starts.
RELOADED_KEYS = ("sources.http", "sources.unix")


def _warn_restart_only(running: Config, fresh: Config, config_path: Path) -> None:
    """Log, naming them, the keys of ``fresh`` that differ from the running ones and that only a restart applies."""
    keys = [k for k in changed_keys(running, fresh) if k not in RELOADED_KEYS]
    if not keys:
        return
    sections = list(dict.fromkeys(_section_of(k) for k in keys))
    keyring = (f" (the keyring is still read from {running.hsm.keyring})"
               if running.hsm.keyring != fresh.hsm.keyring else "")
    log.warning("reload: %s changed in %s, but a reload does not apply %s: the running values stay in force "
                "until the service is restarted%s", ", ".join(keys), config_path, ", ".join(sections), keyring)


def _section_of(key: str) -> str:
    """The table a key of the file is in, as written there (``[hsm]``, ``[[tsa]]``), or the top-level key itself."""
    if key == "tsa":
        return "[[tsa]]"
    table, dot, _ = key.partition(".")
    return f"[{table}]" if dot else key


async def _reload(notary: Notary, config_path: Path, adapters: Adapters, reloading: asyncio.Lock) -> None:
    """SIGHUP: reload the sources and the keyring (new active keys sign from the next seal on).

    Other changes to the file need a restart; they are logged as a warning,
    naming the keys, and not applied.

    All or nothing: the configuration, the signers and the keyring's events
    are read and checked first (a keyring whose history does not extend what
    the log holds is refused), and applied only when all of them hold.
    Reloads run one at a time, so two signals close together never log one
    key event twice.
    """
    async with reloading:
        try:
            fresh = load_config(config_path)
            if fresh.origin != notary.config.origin or fresh.data_dir != notary.config.data_dir:
                raise NotaryError("origin and data_dir cannot change on reload; restart the service")
            _warn_restart_only(notary.config, fresh, config_path)
            keyring = adapters.keyring()
            signers = adapters.signers(keyring)
            events = keyring.unlogged_events(await notary.last_logged_key_event())
            # The events go into the log before their keys sign; if that fails, nothing has changed.
            logged = await notary.log_key_events(events)
        except Exception as exc:  # a bad reload keeps the running configuration
            log.error("reload failed, keeping the running configuration: %s", exc)
            return
        notary.config = dataclasses.replace(notary.config, http_tokens=fresh.http_tokens, unix_peers=fresh.unix_peers)
        notary.replace_signers(signers)
        systemd.notify("STATUS=reloaded")
        log.info("reloaded: %d sources, %d active keys, %d new key events logged",
                 len(fresh.http_tokens) + len(fresh.unix_peers), len(signers), logged)
