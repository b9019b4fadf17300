#!/usr/bin/env python3
"""An independent WebRTC peer for interop tests: aiortc (PyPI) speaking our
signaling protocol (docs/signaling.md) over a WebSocket.

It joins a room; the newcomer (whose `joined` lists a peer) offers, as
`p2p connect` and the browser page do. The offerer opens a data channel
named `chat` (negotiated in-band, DCEP); the answerer takes the channel the
other side opens. It then sends `--send N` string messages (one per line of
`--prefix`), prints every message it receives as one line on stdout
(`recv <text>` or `recv-binary <len> <sha256>`), echoes what it receives when
`--echo` is given, and exits 0 once it has received `--expect N` messages
and sent its own, or 1 on timeout or failure. The peer's DTLS fingerprint as
aiortc saw it is printed as `fingerprint <value>` once connected.
"""

import argparse
import asyncio
import hashlib
import json
import sys

import websockets
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.rtcconfiguration import RTCIceTransportPolicy
from aiortc.sdp import candidate_from_sdp
import aioice.ice
from aiortc.rtcdtlstransport import certificate_digest


def log(*a):
    print("aiortc:", *a, file=sys.stderr, flush=True)


def tamper(sdp):
    """Change one hex digit of the a=fingerprint line: the peer must refuse
    the certificate it then sees in the handshake."""
    out = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=fingerprint:"):
            head, value = line.rsplit(" ", 1)
            first = "0" if value[0] != "0" else "1"
            line = f"{head} {first}{value[1:]}"
        out.append(line)
    return "\r\n".join(out)


async def run(args):
    if args.loopback:
        # aioice never gathers 127.0.0.1; the suites keep their traffic on
        # loopback, so offer that address alone.
        aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]
    received = 0
    sent = 0
    done = asyncio.Event()
    channel_ready = asyncio.Event()
    channel = None

    async with websockets.connect(args.signaling, max_size=2**22) as ws:
        welcome = json.loads(await ws.recv())
        assert welcome["type"] == "welcome", welcome
        me = welcome["peerId"]
        await ws.send(json.dumps({"type": "join", "room": args.room, "name": "aiortc"}))
        joined = None
        while joined is None:
            m = json.loads(await ws.recv())
            if m["type"] == "joined":
                joined = m
            elif m["type"] == "error":
                raise RuntimeError(f"join refused: {m}")
        peers = joined.get("peers", [])
        offerer = bool(peers)
        peer = peers[0]["id"] if peers else None
        log(f"{me} joined {args.room}; {'offerer' if offerer else 'answerer'}")

        if args.turn:
            config = RTCConfiguration(
                iceServers=[RTCIceServer(args.turn, args.turn_user, args.turn_password)],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
            )
        else:
            config = RTCConfiguration(iceServers=[])
        pc = RTCPeerConnection(config)

        def on_message(msg):
            nonlocal received
            received += 1
            if isinstance(msg, str) and len(msg) > 256:
                digest = hashlib.sha256(msg.encode()).hexdigest()
                print(f"recv-long {len(msg)} {digest}", flush=True)
            elif isinstance(msg, str):
                print(f"recv {msg}", flush=True)
            else:
                print(f"recv-binary {len(msg)} {hashlib.sha256(msg).hexdigest()}", flush=True)
            if args.echo and channel is not None:
                channel.send(msg)
            if received >= args.expect:
                done.set()

        def use(ch):
            nonlocal channel
            channel = ch
            ch.on("message", on_message)
            if ch.readyState == "open":
                channel_ready.set()
            ch.on("open", lambda: channel_ready.set())

        @pc.on("datachannel")
        def on_datachannel(ch):
            log(f"the peer opened channel {ch.label!r} (protocol {ch.protocol!r})")
            use(ch)

        @pc.on("connectionstatechange")
        async def on_state():
            log(f"connection state {pc.connectionState}")
            if pc.connectionState == "connected":
                dtls = pc.sctp.transport if pc.sctp else None
                if dtls is not None:
                    for fp in dtls.getLocalParameters().fingerprints:
                        if fp.algorithm == "sha-256":
                            print(f"local-fingerprint {fp.algorithm} {fp.value}", flush=True)
                    # The certificate the peer presented in the handshake,
                    # which aiortc checked against the peer's SDP.
                    cert = dtls._ssl.get_peer_certificate(as_cryptography=True)
                    if cert is not None:
                        digest = certificate_digest(cert, "sha-256")
                        print(f"remote-fingerprint sha-256 {digest}", flush=True)
            if pc.connectionState == "failed":
                done.set()

        async def describe(kind):
            desc = await (pc.createOffer() if kind == "offer" else pc.createAnswer())
            await pc.setLocalDescription(desc)
            # aiortc gathers before the description is ready: its candidates
            # are in the SDP, nothing is trickled.
            sdp = pc.localDescription.sdp
            if args.tamper:
                sdp = tamper(sdp)
            await ws.send(json.dumps({"type": kind, "to": peer, "sdp": sdp}))

        if offerer:
            use(pc.createDataChannel("chat"))
            await describe("offer")

        async def signaling():
            nonlocal peer
            async for raw in ws:
                m = json.loads(raw)
                t = m["type"]
                if t == "peer-joined" and peer is None:
                    peer = m["peer"]["id"]
                elif t == "offer" and not offerer:
                    peer = m["from"]
                    await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "offer"))
                    await describe("answer")
                elif t == "answer" and offerer:
                    await pc.setRemoteDescription(RTCSessionDescription(m["sdp"], "answer"))
                elif t == "candidate":
                    line = m["candidate"]
                    if line.startswith("a="):
                        line = line[2:]
                    if line.startswith("candidate:"):
                        line = line[len("candidate:"):]
                    if not line:
                        continue
                    c = candidate_from_sdp(line)
                    c.sdpMid = m.get("sdpMid") or "0"
                    c.sdpMLineIndex = m.get("sdpMLineIndex") or 0
                    await pc.addIceCandidate(c)
                elif t in ("bye", "peer-left"):
                    log(f"the peer left ({t})")
                    done.set()
                    return

        sig = asyncio.ensure_future(signaling())
        try:
            if args.tamper:
                # Wait for the peer to give up (it leaves the room).
                await asyncio.wait_for(done.wait(), args.timeout)
                return 0 if received == 0 else 1
            await asyncio.wait_for(channel_ready.wait(), args.timeout)
            log(f"channel {channel.label!r} open")
            for i in range(args.send):
                channel.send(f"{args.prefix} {i}")
                sent += 1
            if args.big:
                channel.send("b" * args.big)
            if args.expect > 0:
                await asyncio.wait_for(done.wait(), args.timeout)
            # Let the SCTP layer flush what was sent before closing.
            for _ in range(50):
                if channel.bufferedAmount == 0:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            sig.cancel()
            await pc.close()
    ok = received >= args.expect and sent == args.send
    log(f"sent {sent} received {received}: {'ok' if ok else 'FAILED'}")
    return 0 if ok else 1


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--signaling", required=True)
    p.add_argument("--room", required=True)
    p.add_argument("--send", type=int, default=0)
    p.add_argument("--prefix", default="from aiortc")
    p.add_argument("--expect", type=int, default=0)
    p.add_argument("--big", type=int, default=0, help="then one text message of this many bytes")
    p.add_argument("--tamper", action="store_true", help="alter the fingerprint in our SDP")
    p.add_argument("--echo", action="store_true")
    p.add_argument("--loopback", action="store_true", help="host candidate 127.0.0.1 only")
    p.add_argument("--turn", help="turn:HOST:PORT (relay-only when given)")
    p.add_argument("--turn-user")
    p.add_argument("--turn-password")
    p.add_argument("--timeout", type=float, default=30)
    args = p.parse_args()
    try:
        rc = asyncio.run(asyncio.wait_for(run(args), args.timeout * 2))
    except Exception as e:  # noqa: BLE001
        log(f"failed: {e!r}")
        rc = 1
    sys.exit(rc)


if __name__ == "__main__":
    main()
