"""``ixb audit rebuild``: the hub's audit log brought back from its country's ``AUDIT`` stream.

The hub copies every leaf it appends into the replicated ``AUDIT`` stream and
signs checkpoints only over what the stream holds (:mod:`broker.audit.shipping`).
So after its disk is lost, or after ``ixb hub restore`` put back an older
backup, this command (the hub stopped) reads the stream, checks that every
leaf the local log already holds is the stream's leaf at that index, appends
the rest, and verifies the whole tree: the log is again at least as long as
anything a peer's witness cosigned, and extends it. With no local log it
builds the tree and its search index from the stream alone (the
checkpoints, cosignatures and what this hub witnessed of its peers live only
in the SQLite file and in the backup).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import nats.errors
import nats.js.errors

from broker.audit.log import AuditLog
from broker.audit.shipping import (
    UNKNOWN_ACCEPTANCES_META,
    Batch,
    assemble,
    decode_batch,
    unknown_acceptances_until,
)
from broker.audit_copy import append_leaves, check_held
from broker.backup import state_lock
from broker.cli import hub_identity
from broker.config import HubConfig, load_config
from broker.hub import hub_nats_auth
from broker.store import HubStore
from protocols.errors import AuditStreamError, IoError
from protocols.limits import DEFAULT_LIMITS, Limits
from transport.cliout import emit
from transport.clock import wall_ms
from transport.connect import NatsAuth, connect, unreachable
from transport.streams import AUDIT_STREAM

GET_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Rebuilt:
    before: int
    """Leaves the local log held."""
    stream: int
    """Leaves the ``AUDIT`` stream holds."""
    appended: int
    size: int
    root: str

    @property
    def ahead(self) -> int:
        """Leaves of the local log not in the stream yet (the hub ships them when it runs)."""
        return max(0, self.before - self.stream)


async def read_stream(config: HubConfig, auth: NatsAuth, timeout: float) -> tuple[list[Batch], int]:
    """Every batch of the ``AUDIT`` stream, and the number of messages read."""
    try:
        nc = await connect(
            config.nats.url,
            auth=auth,
            ca_file=config.nats_ca_file(),
            name=f"ixb-audit-rebuild-{config.country}",
            max_reconnect_attempts=3,
            give_up_after=timeout,
            quiet=True,
        )
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        raise unreachable(config.nats.url, exc) from None
    try:
        js = nc.jetstream()
        try:
            info = await js.stream_info(AUDIT_STREAM)
        except nats.js.errors.NotFoundError:
            raise AuditStreamError(
                f"{config.country} has no {AUDIT_STREAM} stream: its hub never copied its "
                "audit log there (a hub older than this command, or another country's NATS)"
            ) from None
        found: list[Batch] = []
        if info.state.messages:
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                try:
                    async with asyncio.timeout(GET_TIMEOUT_S):
                        msg = await js.get_msg(AUDIT_STREAM, seq)
                except nats.js.errors.NotFoundError:
                    continue
                if msg.data is None:
                    continue
                found.append(decode_batch(msg.data))
        return found, len(found)
    except (TimeoutError, nats.errors.Error) as exc:
        raise IoError(f"reading the {AUDIT_STREAM} stream failed: {exc!r}") from None
    finally:
        await nc.close()


def apply_leaves(log: AuditLog, leaves: Sequence[bytes]) -> Rebuilt:
    """Check the log against ``leaves`` (index 0 on), append what it lacks, verify it."""
    before = log.size
    check_held(log, 0, leaves[:before])
    append_leaves(log, leaves[before:])
    log.verify_storage()
    return Rebuilt(
        before=before,
        stream=len(leaves),
        appended=max(0, len(leaves) - before),
        size=log.size,
        root=log.root().hex() if log.size else "",
    )


def remember_rebuild(store: HubStore, now_ms: int, limits: Limits = DEFAULT_LIMITS) -> None:
    """Tell the hub its log holds acceptances its store never knew, for as long as any of
    them can still arrive again (an envelope lives at most ``max_ttl_ms``)."""
    try:
        until = unknown_acceptances_until(now_ms, limits)
        held = store.meta(UNKNOWN_ACCEPTANCES_META)
        if held is None or not held.isdigit() or int(held) < until:
            store.set_meta(UNKNOWN_ACCEPTANCES_META, str(until))
    finally:
        store.close()


def cmd_rebuild(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    with state_lock(config, holder="ixb audit rebuild"):
        auth = hub_nats_auth(config, hub_identity(config))
        batches, _count = asyncio.run(read_stream(config, auth, args.timeout))
        leaves = assemble(batches)
        state = config.path(config.hub.state_dir)
        log = AuditLog(state / "audit.sqlite")
        try:
            done = apply_leaves(log, leaves)
        finally:
            log.close()
        if done.appended:
            remember_rebuild(HubStore(state / "hub.sqlite"), wall_ms(), config.wire_limits())
    if done.appended:
        human = (
            f"appended {done.appended} leaves from {AUDIT_STREAM} "
            f"({done.before} held, {done.stream} in the stream): the log holds {done.size}, "
            "verified"
        )
    elif done.ahead:
        human = (
            f"nothing to append: the log holds {done.before} leaves, {done.ahead} more than "
            f"{AUDIT_STREAM} (the hub copies them when it runs); verified"
        )
    else:
        human = f"nothing to append: the log and {AUDIT_STREAM} hold the same {done.size} leaves"
    emit(
        args,
        human,
        {
            "before": done.before,
            "stream": done.stream,
            "appended": done.appended,
            "ahead": done.ahead,
            "size": done.size,
            "root": done.root,
        },
    )
    return 0
