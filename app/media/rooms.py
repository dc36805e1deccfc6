"""Rooms, participants and their peer connections (docs/media-protocol.md "Commands").

A room has at most one participant per role ("client", "agent"). Each participant is one
`RTCPeerConnection` made from the browser's offer, with
- two `Source`s (its received audio and video, encoded frames via the hook),
- two `ForwardTrack`s on its senders (what the other participant sends, whenever that exists),
- a `SeriesRecorder` while the room records.
"""
import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from aiortc import (RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCRtpSender,
                    RTCSessionDescription)

from . import aiortc_hook, net
from .recorder import SeriesRecorder, free_mb
from .relay import ForwardTrack, Source

log = logging.getLogger("videoar.media.rooms")

ROLES = ("client", "agent")
KINDS = ("audio", "video")
CODECS = {"video": ("video/vp8", "video/rtx"), "audio": ("audio/opus",)}


@dataclass
class MediaSettings:
    capacity: int = 10
    recordings_root: str = ""
    min_free_mb: float = 2048
    ice_servers: list = field(default_factory=list)     # RTCIceServer dicts
    turn: dict = field(default_factory=dict)   # TURN_URLS/SECRET/TTL_SECONDS: fresh credentials per peer
    announced_address: str = ""
    port_min: int = 0
    port_max: int = 0
    transcode: bool = False          # bench only: stock decode + re-encode, no recording
    segment_soft: float = 8.0
    segment_hard: float = 10.0
    connect_timeout: float = 60.0    # a peer not connected by then is dropped as failed
    empty_room_seconds: float = 120.0

    def rtc_configuration(self) -> RTCConfiguration:
        servers = []
        from ..services.turn import turn_servers

        for entry in self.ice_servers + turn_servers("media", self.turn):
            if isinstance(entry, str):
                entry = {"urls": entry}
            servers.append(RTCIceServer(**{k: v for k, v in entry.items()
                                           if k in ("urls", "username", "credential",
                                                    "credentialType")}))
        return RTCConfiguration(iceServers=servers)


def parse_ice_servers(text: str) -> list:
    value = json.loads(text or "[]")
    if not isinstance(value, list):
        raise ValueError("ICE_SERVERS must be a JSON list of RTCIceServer objects")
    return value


class CommandError(Exception):
    def __init__(self, error: str, message: str = "", **extra):
        super().__init__(message or error)
        self.reply = {"ok": False, "error": error, "message": message or error, **extra}


class Participant:
    def __init__(self, room: "Room", conn: str, role: str, pc: RTCPeerConnection):
        self.room, self.conn, self.role, self.pc = room, conn, role, pc
        self.state = "new"
        self.sources: dict[str, Source] = {}
        self.forwards: dict[str, ForwardTrack] = {}
        self.senders: dict[str, RTCRtpSender] = {}
        self.series: SeriesRecorder | None = None
        self.joined_at = time.monotonic()
        self.announced = False       # "connected" published
        self.gone = False            # being dropped / dropped
        self.terminal_published = False

    @property
    def label(self):
        return f"{self.room.id}/{self.role}-{self.conn[:8]}"

    def info(self) -> dict:
        return {"conn": self.conn, "role": self.role, "state": self.state}

    def stats(self) -> dict:
        return {
            **self.info(),
            "received": {k: s.frames for k, s in self.sources.items()},
            "keyframes": self.sources["video"].keyframes if "video" in self.sources else 0,
            "forwarded": {k: f.forwarded for k, f in self.forwards.items()},
            "dropped": {k: f.dropped for k, f in self.forwards.items()},
            "plis_sent": self.sources["video"].plis_sent if "video" in self.sources else 0,
            "losses": self.sources["video"].losses if "video" in self.sources else 0,
            "segments": self.series.segments_closed if self.series else 0,
        }


class Room:
    def __init__(self, room_id: str):
        self.id = room_id
        self.participants: dict[str, Participant] = {}
        self.recording = False
        self.record_dir: str | None = None
        self.lock = asyncio.Lock()
        self.empty_since = time.monotonic()

    def other(self, role: str) -> Participant | None:
        return self.participants.get("agent" if role == "client" else "client")


class Rooms:
    def __init__(self, settings: MediaSettings, publish):
        self.settings = settings
        self.publish_raw = publish     # async (room_id, dict)
        self.rooms: dict[str, Room] = {}

    # -- helpers ---------------------------------------------------------------------------
    async def publish(self, room_id: str, event: dict):
        try:
            await self.publish_raw(room_id, event)
        except Exception as exc:
            log.warning("publish to room %s failed: %s", room_id, exc)

    def record_dir(self, room_id: str, given) -> str:
        if given:
            return str(given)
        if not self.settings.recordings_root:
            raise CommandError("bad_request", "record_dir missing and RECORDINGS_ROOT not set")
        return str(Path(self.settings.recordings_root) / room_id)

    def check_disk(self, record_dir: str):
        free = free_mb(record_dir)
        if free < self.settings.min_free_mb:
            raise CommandError("disk", f"{free:.0f} MB free on the recording disk, "
                                       f"{self.settings.min_free_mb:.0f} MB needed",
                               free_mb=int(free))

    def _room_for_new(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            if len(self.rooms) >= self.settings.capacity:
                raise CommandError("capacity", f"this media process takes "
                                               f"{self.settings.capacity} calls")
            room = self.rooms[room_id] = Room(room_id)
        return room

    def calls(self) -> int:
        return len(self.rooms)

    # -- commands --------------------------------------------------------------------------
    async def join(self, room_id: str, conn: str, role: str, sdp: str, type: str = "offer",
                   record: bool = False, record_dir=None, **_) -> dict:
        if role not in ROLES:
            raise CommandError("bad_request", f"role must be one of {ROLES}")
        if not conn or not sdp or type != "offer":
            raise CommandError("bad_offer", "conn and an SDP offer are needed")
        room = self._room_for_new(room_id)   # reserves the slot before any await
        async with room.lock:
            try:
                if record:
                    directory = self.record_dir(room_id, record_dir)
                    self.check_disk(directory)
                    room.record_dir = directory
                participant = await self._make_peer(room, conn, role, sdp)
            except CommandError:
                self._forget_if_empty(room)
                raise
            old = room.participants.get(role)
            if old is not None:
                log.info("%s replaced by %s", old.label, conn[:8])
                await self._drop(old, "closed")
            room.participants[role] = participant
            self._connect_pair(room)
            if record:
                room.recording = True
            if room.recording:
                self._start_series(participant)
            answer = participant.pc.localDescription
            sdp_out = net.announce(answer.sdp, self.settings.announced_address)
            asyncio.get_running_loop().call_later(self.settings.connect_timeout,
                                                  self._connect_watchdog, participant)
            log.info("%s joined (record=%s)", participant.label, room.recording)
            return {"ok": True, "sdp": sdp_out, "type": answer.type}

    async def leave(self, room_id: str, conn: str, **_) -> dict:
        room = self.rooms.get(room_id)
        if room is None:
            return {"ok": True}
        async with room.lock:
            for participant in list(room.participants.values()):
                if participant.conn == conn:
                    await self._drop(participant, "closed")
            self._mark_empty(room)
        return {"ok": True}

    async def record(self, room_id: str, on: bool = True, record_dir=None, **_) -> dict:
        if not on:
            room = self.rooms.get(room_id)
            if room is None:
                return {"ok": True}
            async with room.lock:
                room.recording = False
                await asyncio.gather(*(self._stop_series(p) for p in room.participants.values()))
            return {"ok": True}
        room = self._room_for_new(room_id)
        async with room.lock:
            directory = self.record_dir(room_id, record_dir)
            try:
                self.check_disk(directory)
            except CommandError as exc:
                reply = dict(exc.reply)
                self._forget_if_empty(room)
                return reply
            room.record_dir = directory
            room.recording = True
            for participant in room.participants.values():
                if participant.series is None:
                    self._start_series(participant)
        return {"ok": True}

    async def end(self, room_id: str, **_) -> dict:
        room = self.rooms.get(room_id)
        if room is None:
            return {"ok": True}
        async with room.lock:
            room.recording = False
            await asyncio.gather(*(self._drop(p, "closed") for p in list(room.participants.values())))
            self.rooms.pop(room_id, None)
        log.info("room %s ended", room_id)
        return {"ok": True}

    def status(self, room_id: str, **_) -> dict:
        room = self.rooms.get(room_id)
        if room is None:
            return {"ok": True, "participants": [], "recording": False, "exists": False}
        return {"ok": True, "participants": [p.info() for p in room.participants.values()],
                "recording": room.recording, "exists": True,
                "stats": [p.stats() for p in room.participants.values()]}

    async def close_all(self):
        for room_id in list(self.rooms):
            try:
                await self.end(room_id)
            except Exception:
                log.exception("closing room %s", room_id)

    def sweep(self):
        """Forget rooms that stayed empty for a while (web crashed before `end`)."""
        now = time.monotonic()
        for room_id, room in list(self.rooms.items()):
            if (not room.participants and not room.lock.locked()
                    and now - room.empty_since > self.settings.empty_room_seconds):
                log.info("room %s empty for %.0f s, forgotten", room_id, now - room.empty_since)
                self.rooms.pop(room_id, None)

    # -- peers -----------------------------------------------------------------------------
    async def _make_peer(self, room: Room, conn: str, role: str, sdp: str) -> Participant:
        pc = RTCPeerConnection(self.settings.rtc_configuration())
        participant = Participant(room, conn, role, pc)
        transcode = self.settings.transcode
        for kind in KINDS:
            forward = ForwardTrack(kind, label=participant.label)
            transceiver = pc.addTransceiver(forward, direction="sendrecv")
            capabilities = RTCRtpSender.getCapabilities(kind).codecs
            transceiver.setCodecPreferences(
                [c for c in capabilities if c.mimeType.lower() in CODECS[kind]])
            participant.forwards[kind] = forward
            participant.senders[kind] = transceiver.sender
            if not transcode:
                aiortc_hook.on_keyframe_request(transceiver.sender, forward.request_keyframe)

        @pc.on("track")
        def on_track(track):
            if track.kind not in KINDS or track.kind in participant.sources:
                return
            receiver = next((t.receiver for t in pc.getTransceivers()
                             if t.receiver.track is track), None)
            if not transcode:
                aiortc_hook.register(track, receiver)
            source = Source(track.kind, track, receiver, label=participant.label)
            if not transcode and track.kind == "video":
                aiortc_hook.on_picture_loss(receiver, source.picture_lost)
            participant.sources[track.kind] = source.start()

        @pc.on("connectionstatechange")
        async def on_state():
            await self._state_changed(participant, pc.connectionState)

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except Exception as exc:
            log.warning("bad offer from %s/%s-%s: %s", room.id, role, conn[:8], exc)
            for source in participant.sources.values():
                await source.stop()
            await pc.close()
            raise CommandError("bad_offer", str(exc)[:300])
        return participant

    def _connect_pair(self, room: Room):
        """Point each participant's ForwardTracks at the other participant's Sources."""
        for role in ROLES:
            me, other = room.participants.get(role), room.other(role)
            if me is None:
                continue
            for kind in KINDS:
                source = other.sources.get(kind) if other is not None else None
                if me.forwards[kind].source is not source:
                    me.forwards[kind].set_source(source)

    def _start_series(self, participant: Participant):
        if self.settings.transcode:
            log.warning("recording is off in transcode mode")
            return
        room = participant.room
        try:
            participant.series = SeriesRecorder(
                room=room.id, conn=participant.conn, role=participant.role,
                record_dir=room.record_dir, min_free_mb=self.settings.min_free_mb,
                publish=lambda event: self.publish(room.id, event),
                soft=self.settings.segment_soft, hard=self.settings.segment_hard,
            ).start(participant.sources)
        except OSError as exc:   # the directory cannot be made or written
            log.error("%s: cannot record in %s: %s", participant.label, room.record_dir, exc)
            participant.series = None
            asyncio.ensure_future(self.publish(room.id, {
                "event": "recording_error", "error": "io", "conn": participant.conn,
                "role": participant.role, "message": str(exc)[:200]}))

    async def _stop_series(self, participant: Participant):
        series, participant.series = participant.series, None
        if series is not None:
            await series.finalize()

    async def _drop(self, participant: Participant, state: str):
        """Close a participant: finalize its series, stop relaying, close the peer, publish
        its terminal state once ("closed" or "failed")."""
        if participant.gone:
            return
        participant.gone = True
        room = participant.room
        if room.participants.get(participant.role) is participant:
            del room.participants[participant.role]
        other = room.other(participant.role)
        if other is not None:
            for kind in KINDS:
                if other.forwards[kind].source is participant.sources.get(kind):
                    other.forwards[kind].set_source(None)
        try:
            await self._stop_series(participant)
        except Exception:
            log.exception("%s: finalizing the series", participant.label)
        for forward in participant.forwards.values():
            forward.set_source(None)
            forward.stop()
        for source in participant.sources.values():
            await source.stop()
        try:
            await participant.pc.close()
        except Exception:
            log.exception("%s: closing the peer", participant.label)
        participant.state = state
        if not participant.terminal_published:
            participant.terminal_published = True
            await self.publish(room.id, {"event": "peer", "conn": participant.conn,
                                         "role": participant.role, "state": state})
        self._mark_empty(room)
        log.info("%s %s", participant.label, state)

    async def _state_changed(self, participant: Participant, state: str):
        if participant.gone:
            return
        participant.state = state
        if state == "connected" and not participant.announced:
            participant.announced = True
            log.info("%s connected", participant.label)
            await self.publish(participant.room.id, {"event": "peer", "conn": participant.conn,
                                                     "role": participant.role,
                                                     "state": "connected"})
        elif state in ("failed", "closed"):
            asyncio.ensure_future(self._peer_gone(participant, state))

    async def _peer_gone(self, participant: Participant, state: str):
        room = participant.room
        async with room.lock:
            await self._drop(participant, state)

    def _connect_watchdog(self, participant: Participant):
        if not participant.gone and not participant.announced:
            log.warning("%s not connected after %.0f s", participant.label,
                        self.settings.connect_timeout)
            asyncio.ensure_future(self._peer_gone(participant, "failed"))

    def _mark_empty(self, room: Room):
        if not room.participants:
            room.empty_since = time.monotonic()

    def _forget_if_empty(self, room: Room):
        if not room.participants and not room.recording and self.rooms.get(room.id) is room:
            self.rooms.pop(room.id, None)
