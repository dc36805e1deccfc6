// One WebRTC connection to the media server, signaled over a WebSocket to the web server.
// Used by the client's page and the agent's console. The browser makes a complete offer
// (VP8 + Opus, non-trickle), the server answers; what the other participant sends arrives on
// the same transceivers. A dropped connection is renegotiated on the same WebSocket; a
// dropped WebSocket is reopened. See docs/media-protocol.md.
(function () {
  "use strict";

  const GATHER_TIMEOUT_MS = 4000;

  function preferCodec(transceiver, kind, mime) {
    if (!transceiver.setCodecPreferences || !window.RTCRtpReceiver ||
        !RTCRtpReceiver.getCapabilities) return;
    const caps = RTCRtpReceiver.getCapabilities(kind);
    if (!caps) return;
    const codecs = caps.codecs.filter((c) => c.mimeType.toLowerCase() === mime);
    if (codecs.length) transceiver.setCodecPreferences(codecs);
  }

  function waitForGathering(pc) {
    if (pc.iceGatheringState === "complete") return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        if (pc.iceGatheringState === "complete") {
          pc.removeEventListener("icegatheringstatechange", done);
          resolve();
        }
      };
      pc.addEventListener("icegatheringstatechange", done);
      setTimeout(resolve, GATHER_TIMEOUT_MS);
    });
  }

  class Call {
    // options: url (WebSocket path), iceServers, stream (local MediaStream),
    // remoteVideo (the <video> that shows the other side), onEvent(message), onStatus(status),
    // onError(text)
    constructor(options) {
      this.options = options;
      this.stream = options.stream;
      this.pc = null;
      this.ws = null;
      this.closed = false;
      this.retry = 0;
      this.remote = new MediaStream();
      this.videoSender = null;
    }

    start() {
      this.openSocket();
    }

    openSocket() {
      if (this.closed) return;
      const scheme = location.protocol === "https:" ? "wss://" : "ws://";
      // The server may name the socket with its own scheme and host; only the path counts.
      const path = new URL(this.options.url, location.href).pathname;
      const ws = new WebSocket(scheme + location.host + path);
      this.ws = ws;
      this.status("connecting");
      ws.onopen = () => { this.retry = 0; this.negotiate(); };
      ws.onmessage = (event) => this.onMessage(JSON.parse(event.data));
      ws.onclose = () => {
        if (this.ws !== ws || this.closed) return;
        this.status("reconnecting");
        const delay = Math.min(8000, 500 * 2 ** this.retry++);
        setTimeout(() => this.openSocket(), delay);
      };
      if (!this.pinger) {
        this.pinger = setInterval(() => this.send({ type: "ping" }), 20000);
      }
    }

    send(message) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(message));
    }

    async negotiate() {
      if (this.pc) { this.pc.ontrack = null; this.pc.onconnectionstatechange = null; this.pc.close(); }
      const policyEl = document.querySelector("[data-ice-policy]");
      const pc = new RTCPeerConnection({ iceServers: this.options.iceServers || [],
                                         iceTransportPolicy: (policyEl && policyEl.dataset.icePolicy) || "all",
                                         bundlePolicy: "max-bundle" });
      this.pc = pc;
      const video = this.stream.getVideoTracks()[0];
      const audio = this.stream.getAudioTracks()[0];
      const vt = pc.addTransceiver(video || "video", { direction: "sendrecv", streams: [this.stream] });
      const at = pc.addTransceiver(audio || "audio", { direction: "sendrecv", streams: [this.stream] });
      preferCodec(vt, "video", "video/vp8");
      preferCodec(at, "audio", "audio/opus");
      this.videoSender = vt.sender;
      await this.tuneVideoSender();
      this.remote = new MediaStream();
      pc.ontrack = (event) => {
        this.remote.addTrack(event.track);
        const video = this.options.remoteVideo;
        if (video) {
          if (video.srcObject !== this.remote) video.srcObject = this.remote;
          video.play().catch(() => {});
        }
      };
      pc.onconnectionstatechange = () => this.onConnectionState(pc);
      const offer = await pc.createOffer();
      await pc.setLocalDescription(offer);
      await waitForGathering(pc);
      if (this.pc !== pc) return;
      // Each offer is numbered: an answer to an older one (a renegotiation overtook it) is
      // dropped instead of being applied to the newer connection.
      this.offerSeq = (this.offerSeq || 0) + 1;
      this.send({ type: "offer", sdp: pc.localDescription.sdp, seq: this.offerSeq });
    }

    async tuneVideoSender() {
      // Faces and documents must stay legible: keep resolution, give up frame rate first.
      const sender = this.videoSender;
      if (!sender || !sender.getParameters) return;
      if (sender.track) sender.track.contentHint = "detail";
      try {
        const params = sender.getParameters();
        params.degradationPreference = "maintain-resolution";
        if (!params.encodings || !params.encodings.length) params.encodings = [{}];
        params.encodings[0].maxBitrate = 2500000;
        await sender.setParameters(params);
      } catch (err) { /* not every browser takes every parameter before negotiation */ }
    }

    onConnectionState(pc) {
      if (pc !== this.pc || this.closed) return;
      const state = pc.connectionState;
      if (state === "connected") { this.retry = 0; this.status("connected"); }
      if (state === "disconnected") {
        this.status("reconnecting");
        setTimeout(() => {
          if (pc === this.pc && pc.connectionState === "disconnected") this.renegotiateLater();
        }, 3000);
      }
      if (state === "failed") { this.status("reconnecting"); this.renegotiateLater(); }
    }

    renegotiateLater() {
      if (this.pending) return;  // one renegotiation at a time, whatever asked for it
      const delay = Math.min(8000, 1000 * 2 ** this.retry++);
      this.pending = setTimeout(() => {
        this.pending = null;
        if (!this.closed) this.negotiate();
      }, delay);
    }

    async onMessage(message) {
      if (message.type === "answer") {
        const pc = this.pc;
        if (!pc || message.seq !== this.offerSeq || pc.signalingState !== "have-local-offer") return;
        try {
          await pc.setRemoteDescription({ type: "answer", sdp: message.sdp });
        } catch (err) {
          this.renegotiateLater();
        }
      } else if (message.type === "error") {
        if (this.options.onError) this.options.onError(message.message);
        this.renegotiateLater();
      } else if (message.type === "event") {
        if (message.event === "media_lost") this.renegotiateLater();
        // This page's connection was taken over by a newer one (another tab, a reload).
        if (message.event === "superseded" || message.event === "ended") this.close(false);
        if (this.options.onEvent) this.options.onEvent(message);
      }
    }

    async replaceVideo(track) {
      const old = this.stream.getVideoTracks()[0];
      if (this.videoSender) await this.videoSender.replaceTrack(track);
      if (old && old !== track) { this.stream.removeTrack(old); old.stop(); }
      this.stream.addTrack(track);
      await this.tuneVideoSender();
    }

    status(value) {
      if (this.options.onStatus) this.options.onStatus(value);
    }

    close(sayLeaving) {
      if (sayLeaving) this.send({ type: "leave" });
      this.closed = true;
      clearInterval(this.pinger);
      if (this.pc) this.pc.close();
      if (this.ws) { const ws = this.ws; this.ws = null; setTimeout(() => ws.close(), 200); }
    }
  }

  window.VideoARCall = Call;
})();
