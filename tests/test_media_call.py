"""The media process end to end: aiortc "browsers" talk to a real `python -m app.media` through
the Redis commands, as web does (app.media.client.call)."""
import asyncio
import json
import time
import uuid

import pytest

from tests.support.media import (EventListener, FakeBrowser, inspect_segment, media_files,  # noqa: F401
                                 media_process, wait_for)
from tests.support.processes import wait_until


def conn_id():
    return uuid.uuid4().hex


def check_series(directory, *, room, conn, role, hard=10.0, size=None, min_fps=29.0):
    """Every closed segment of a series is valid; returns [(sidecar, inspection)]."""
    series = json.loads((directory / "series.json").read_text())
    assert series["room"] == room and series["conn"] == conn and series["role"] == role
    assert series["started"] > 1.7e9
    segments = sorted(directory.glob("*.webm"))
    assert segments, f"no closed segment in {directory}"
    assert [p.name for p in segments] == [f"{n:05d}.webm" for n in range(1, len(segments) + 1)]
    result = []
    for path in segments:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        info = inspect_segment(path)
        assert info["codecs"] == ("vp8", "opus") and info["streams"] == ["video", "audio"]
        assert info["time_bases"] == (pytest.approx(0.001), pytest.approx(0.001))
        assert info["keyframes"][0], f"{path.name} does not start with a keyframe"
        assert info["video_pts"][0] < 5
        assert info["decoded"] == info["frames"] == sidecar["video_frames"]
        assert all(b > a for a, b in zip(info["video_pts"], info["video_pts"][1:]))
        assert all(b > a for a, b in zip(info["audio_pts"], info["audio_pts"][1:]))
        assert info["audio_packets"] == sidecar["audio_packets"] == info["audio_decoded"]
        assert sidecar["seq"] == int(path.stem)
        assert sidecar["duration"] <= hard + 1e-6
        assert info["span_s"] <= hard
        assert (sidecar["width"], sidecar["height"]) in info["sizes"]
        assert len(info["sizes"]) == 1
        if size:
            assert info["sizes"] == {size}
        if info["frames"] > 30:
            assert info["fps"] >= min_fps, f"{path.name}: {info['fps']:.1f} fps"
            assert info["fps"] <= 31
        result.append((sidecar, info))
    starts = [s["start"] for s, _ in result]
    assert starts == sorted(starts)
    return result


def test_call_relays_both_ways_and_records(media_process, media_files):
    """Both participants get the other's picture and sound; every segment of both series is
    a valid, keyframe-first WebM of at most 10 s at 30 fps with a right sidecar; a PLI from a
    receiver reaches the sender (rate-limited); `leave` closes the open segment properly."""
    media = media_process()
    room = "101"
    events = EventListener(media.redis_url, room)
    client_conn, agent_conn = conn_id(), conn_id()
    record_dir = media.recordings / room

    async def scenario():
        client = FakeBrowser(media_files["vga"])
        agent = FakeBrowser(media_files["hd"])
        try:
            await client.join(media, room, client_conn, "client", record=True,
                              record_dir=str(record_dir))
            # the other side joins later: its media must reach the client anyway
            await asyncio.sleep(0.5)
            await agent.join(media, room, agent_conn, "agent", record=True,
                             record_dir=str(record_dir))
            await client.wait_connected()
            await agent.wait_connected()
            status = await media.acall("status", room=room)
            assert status["ok"] and status["recording"] is True
            assert {(p["role"], p["conn"]) for p in status["participants"]} == \
                {("client", client_conn), ("agent", agent_conn)}
            await wait_for(lambda: len(client.received["video"]) > 60
                           and len(agent.received["video"]) > 60, 15, "relayed video")
            await wait_for(lambda: len(client.received["audio"]) > 50
                           and len(agent.received["audio"]) > 50, 10, "relayed audio")
            assert {(w, h) for _, _, w, h in client.received["video"]} == {(1280, 720)}
            assert {(w, h) for _, _, w, h in agent.received["video"]} == {(640, 480)}

            # PLI forwarding: the agent's browser asks for a keyframe of the client's video;
            # the media process forwards it to the client's sender, at most 1 per 300 ms.
            plis = []
            client.video_sender()._send_keyframe = lambda: plis.append(asyncio.get_running_loop().time())
            await asyncio.sleep(0.6)
            before = len(plis)
            receiver = agent.video_receiver()
            ssrc = receiver.getSynchronizationSources()[0].source
            await receiver._send_rtcp_pli(ssrc)
            await wait_for(lambda: len(plis) > before, 3, "the PLI at the client's sender")
            await asyncio.sleep(0.4)
            burst_start = len(plis)
            for _ in range(10):
                await receiver._send_rtcp_pli(ssrc)
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            assert 1 <= len(plis) - burst_start <= 3, plis   # 10 PLIs in 0.2 s merged

            # let the 10 s clips run past the 8 s rotation
            await wait_for(lambda: len(events.of("segment")) >= 2, 15, "8 s rotations")
            await asyncio.sleep(1.0)
            for role, conn in (("client", client_conn), ("agent", agent_conn)):
                assert (await media.acall("leave", room=room, conn=conn)) == {"ok": True}
        finally:
            await client.close()
            await agent.close()
        return client, agent

    client, agent = asyncio.run(scenario())
    # pts of what a browser received never jump (continuous relay)
    for browser in (client, agent):
        pts = [p for _, p, _, _ in browser.received["video"]]
        assert all(0 < b - a < 90000 for a, b in zip(pts, pts[1:]))
    client_series = check_series(record_dir / f"client-{client_conn}", room=room,
                                 conn=client_conn, role="client", size=(640, 480))
    agent_series = check_series(record_dir / f"agent-{agent_conn}", room=room, conn=agent_conn,
                                role="agent", size=(1280, 720))
    for series in (client_series, agent_series):
        assert len(series) == 2                       # rotated at ~8 s, the rest kept by leave
        first, second = series
        assert 7.9 <= first[0]["duration"] <= 8.2
        assert first[1]["frames"] >= 238
        assert second[0]["start"] - first[0]["start"] == pytest.approx(first[0]["duration"], abs=0.1)
        assert first[0]["audio_packets"] >= 380       # 20 ms packets over ~8 s
    assert not list(record_dir.rglob("*.part"))
    segment_events = events.of("segment")
    assert len(segment_events) == 4
    assert {(e["role"], e["seq"]) for e in segment_events} == \
        {("client", 1), ("client", 2), ("agent", 1), ("agent", 2)}
    assert all(e["path"].endswith(f"{e['seq']:05d}.webm") for e in segment_events)
    for role, conn in (("client", client_conn), ("agent", agent_conn)):
        assert events.of("peer", conn=conn, role=role, state="connected")
        assert events.of("peer", conn=conn, role=role, state="closed")
    events.close()
    heartbeat = wait_until(media.heartbeat, 12, message="the heartbeat key")
    assert heartbeat["ident"] == media.ident and heartbeat["capacity"] == 10
    assert heartbeat["started_at"] <= time.time()
    assert "p99_ms" in heartbeat["loop_lag"]


def test_rejoin_replaces_the_older_connection_and_starts_a_new_series(media_process,
                                                                     media_files):
    """A second `join` of the agent role closes the first agent connection (peer closed,
    series finalized) and starts a new series; the client's incoming video keeps going with
    increasing pts, now from the new agent."""
    media = media_process(MEDIA_SEGMENT_SOFT="1", MEDIA_SEGMENT_HARD="2")
    room = "102"
    events = EventListener(media.redis_url, room)
    client_conn, agent1_conn, agent2_conn = conn_id(), conn_id(), conn_id()
    record_dir = media.recordings / room

    async def scenario():
        client = FakeBrowser(media_files["vga"])
        agent1 = FakeBrowser(media_files["vga_short"])
        agent2 = FakeBrowser(media_files["hd_short"])
        try:
            await client.join(media, room, client_conn, "client", record=True,
                              record_dir=str(record_dir))
            await agent1.join(media, room, agent1_conn, "agent", record=True,
                              record_dir=str(record_dir))
            await wait_for(lambda: len(client.received["video"]) > 45, 15, "agent 1's video")
            await wait_for(lambda: events.of("segment", role="agent"), 10, "an agent segment")
            switch_at = len(client.received["video"])
            await agent2.join(media, room, agent2_conn, "agent", record=True,
                              record_dir=str(record_dir))
            await wait_for(lambda: events.of("peer", conn=agent1_conn, state="closed"), 10,
                           "agent 1 closed")
            await wait_for(lambda: agent1.pc.connectionState == "closed", 10,
                           "agent 1's peer seeing the close")
            status = await media.acall("status", room=room)
            assert {(p["role"], p["conn"]) for p in status["participants"]} == \
                {("client", client_conn), ("agent", agent2_conn)}
            await wait_for(lambda: sum(1 for _, _, w, _ in client.received["video"][switch_at:]
                                       if w == 1280) > 45, 15, "agent 2's video at the client")
            await wait_for(lambda: len(agent2.received["video"]) > 30, 10, "client video at agent 2")
            assert (await media.acall("end", room=room)) == {"ok": True}
            assert (await media.acall("status", room=room))["participants"] == []
        finally:
            for browser in (client, agent1, agent2):
                await browser.close()
        return client

    client = asyncio.run(scenario())
    video = client.received["video"]
    sizes = [w for _, _, w, _ in video]
    assert sizes[0] == 640 and sizes[-1] == 1280
    assert sizes.index(1280) > 45 and 640 not in sizes[sizes.index(1280):]
    pts = [p for _, p, _, _ in video]
    # one stream for the client's decoder: pts keep increasing across the switch, no jump
    assert all(0 < b - a < 90000 for a, b in zip(pts, pts[1:])), \
        max(b - a for a, b in zip(pts, pts[1:]))
    first = check_series(record_dir / f"agent-{agent1_conn}", room=room, conn=agent1_conn,
                         role="agent", hard=2, size=(640, 480))
    second = check_series(record_dir / f"agent-{agent2_conn}", room=room, conn=agent2_conn,
                          role="agent", hard=2, size=(1280, 720))
    assert first and second
    assert second[0][0]["start"] > first[-1][0]["start"]
    check_series(record_dir / f"client-{client_conn}", room=room, conn=client_conn,
                 role="client", hard=2, size=(640, 480))
    assert not list(record_dir.rglob("*.part"))
    assert events.of("peer", conn=agent1_conn, state="closed")
    assert events.of("peer", conn=agent2_conn, state="closed")
    events.close()


def test_resolution_change_rotates_and_no_keyframe_means_a_hard_cut(media_process, media_files):
    """A keyframe of another size starts a new segment at once; without keyframes a segment
    is cut at the hard limit (here 2 s) and keyframes are requested."""
    media = media_process(MEDIA_SEGMENT_SOFT="1.5", MEDIA_SEGMENT_HARD="2")
    room = "103"
    client_conn = conn_id()
    record_dir = media.recordings / room

    async def scenario():
        client = FakeBrowser(media_files["switch"])   # 1 s 640x480, then 2.5 s 1280x720
        agent = FakeBrowser(None)
        try:
            await client.join(media, room, client_conn, "client")
            await agent.join(media, room, conn_id(), "agent")
            assert (await media.acall("record", room=room, on=True,
                                      record_dir=str(record_dir))) == {"ok": True}
            await wait_for(lambda: any(w == 1280 for _, _, w, _ in agent.received["video"]), 15,
                           "the switch")
            await asyncio.sleep(2.8)                  # past the hard limit of the HD part
            status = await media.acall("status", room=room)
            stats = next(s for s in status["stats"] if s["role"] == "client")
            assert stats["plis_sent"] >= 2           # asked for keyframes that never came
            assert (await media.acall("record", room=room, on=False)) == {"ok": True}
            assert (await media.acall("status", room=room))["recording"] is False
        finally:
            await client.close()
            await agent.close()

    asyncio.run(scenario())
    series = check_series(record_dir / f"client-{client_conn}", room=room, conn=client_conn,
                          role="client", hard=2)
    assert [(s["width"], s["height"]) for s, _ in series] == [(640, 480), (1280, 720)]
    (first, first_info), (second, second_info) = series
    assert first["duration"] < 1.2 and first_info["frames"] <= 30  # cut by the size change
    assert 1.9 <= second["duration"] <= 2.0 and 55 <= second_info["frames"] <= 60  # hard cut
    assert not list(record_dir.rglob("*.part"))


def test_sigkill_loses_only_the_open_segment(media_process, media_files):
    media = media_process(MEDIA_SEGMENT_SOFT="1", MEDIA_SEGMENT_HARD="2")
    room = "104"
    events = EventListener(media.redis_url, room)
    client_conn, agent_conn = conn_id(), conn_id()
    record_dir = media.recordings / room

    async def scenario():
        client = FakeBrowser(media_files["vga_fast_gop"])
        agent = FakeBrowser(media_files["vga_fast_gop"])
        try:
            await client.join(media, room, client_conn, "client", record=True,
                              record_dir=str(record_dir))
            await agent.join(media, room, agent_conn, "agent", record=True,
                             record_dir=str(record_dir))
            await wait_for(lambda: len(events.of("segment", role="client")) >= 3
                           and len(events.of("segment", role="agent")) >= 3, 15, "3 segments")
            await asyncio.sleep(0.5)
            media.kill()
        finally:
            await client.close()
            await agent.close()

    asyncio.run(scenario())
    for role, conn in (("client", client_conn), ("agent", agent_conn)):
        directory = record_dir / f"{role}-{conn}"
        series = check_series(directory, room=room, conn=conn, role=role, hard=2)
        assert len(series) >= 3
        parts = sorted(directory.glob("*.part"))
        assert 1 <= len(parts) <= 2                    # the open one (and one in its 250 ms grace)
        for part in parts:
            seq = int(part.name[:5])
            assert seq > len(series) and not (directory / f"{seq:05d}.json").exists()
        assert not list(directory.glob("*.tmp"))
    assert not events.of("peer", state="closed")
    events.close()
    # a new media process has another ident: web tells a restart from a live process
    again = media_process()
    assert again.ident != media.ident
    assert wait_until(again.heartbeat, 12, message="the heartbeat")["ident"] == again.ident
    assert (again.call("status", room=room))["participants"] == []


def test_capacity_disk_bad_offer_and_network_settings(media_process):
    media = media_process(MEDIA_CAPACITY="1", MEDIA_ANNOUNCED_ADDRESS="192.0.2.10",
                          MEDIA_PORT_MIN="41000", MEDIA_PORT_MAX="41050",
                          RECORDING_MIN_FREE_MB="100000000")

    async def offer():
        browser = FakeBrowser(None)
        sdp = await browser.offer()
        await browser.close()
        return sdp

    sdp = asyncio.run(offer())
    reply = media.call("join", timeout=20, room="201", conn=conn_id(), role="client", sdp=sdp,
                       type="offer")
    assert reply["ok"] and reply["type"] == "answer"
    hosts = [line.split() for line in reply["sdp"].splitlines()
             if line.startswith("a=candidate:") and " typ host" in line and "." in line]
    assert hosts
    for fields in hosts:
        assert fields[4] == "192.0.2.10" and 41000 <= int(fields[5]) <= 41050
    assert "c=IN IP4 192.0.2.10" in reply["sdp"]

    assert media.call("join", room="202", conn=conn_id(), role="client", sdp=sdp,
                      type="offer")["error"] == "capacity"
    assert media.call("record", room="203", on=True)["error"] == "capacity"
    refused = media.call("record", room="201", on=True)
    assert refused["ok"] is False and refused["error"] == "disk" and refused["free_mb"] > 0
    refused = media.call("join", room="201", conn=conn_id(), role="agent", sdp=sdp, type="offer",
                         record=True)
    assert refused["error"] == "disk"
    assert media.call("join", room="201", conn=conn_id(), role="agent", sdp="v=0 nonsense",
                      type="offer")["error"] == "bad_offer"
    assert media.call("join", room="201", conn=conn_id(), role="boss", sdp=sdp,
                      type="offer")["ok"] is False
    status = media.call("status", room="201")
    assert [p["role"] for p in status["participants"]] == ["client"]
    assert status["recording"] is False
    pong = media.call("ping")
    assert pong["calls"] == 1 and pong["capacity"] == 1 and pong["ident"] == media.ident
    assert pong["started_at"] <= time.time()
    assert media.call("frobnicate", room="201")["ok"] is False

    assert media.call("end", room="201") == {"ok": True}
    assert media.call("join", timeout=20, room="202", conn=conn_id(), role="client", sdp=sdp,
                      type="offer")["ok"]
    assert media.call("ping")["calls"] == 1
