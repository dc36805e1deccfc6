// The client's call page: camera and microphone pickers with preview and level, consent,
// "Iniciar videoconferência", then the call on the same page (the camera stays open), the
// agent's requests (document still, face photo, password) and a rejoin after a drop.
(function () {
  "use strict";

  const root = document.getElementById("client-call");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const preview = $("preview");
  const cameraSelect = $("camera");
  const micSelect = $("microphone");
  const consent = $("consent");
  const startButton = $("start-call");
  const help = $("device-help");
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
  let stream = null;
  let call = null;
  let meter = null;
  let facing = "user";
  let agentPresent = false;
  let otherConn = null;

  function showHelp(kind) {
    help.hidden = !kind;
    help.querySelectorAll("[data-help]").forEach((p) => { p.hidden = p.dataset.help !== kind; });
  }

  function videoConstraints(deviceId) {
    const base = { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } };
    if (deviceId) base.deviceId = { exact: deviceId };
    else base.facingMode = facing;
    return base;
  }

  function audioConstraints(deviceId) {
    const base = { echoCancellation: true, noiseSuppression: false, autoGainControl: true };
    if (deviceId) base.deviceId = { exact: deviceId };
    return base;
  }

  function errorKind(err) {
    const name = err && err.name;
    if (name === "NotAllowedError" || name === "SecurityError") return "denied";
    if (name === "NotFoundError" || name === "OverconstrainedError") return "notfound";
    if (name === "NotReadableError" || name === "AbortError") return "busy";
    return "other";
  }

  async function openDevices(cameraId, micId) {
    if (!window.isSecureContext) { showHelp("insecure"); return; }
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia ||
        !window.RTCPeerConnection) { showHelp("unsupported"); return; }
    try {
      const next = await navigator.mediaDevices.getUserMedia({
        video: videoConstraints(cameraId), audio: audioConstraints(micId) });
      if (stream) stream.getTracks().forEach((t) => t.stop());
      stream = next;
      showHelp(null);
    } catch (err) {
      showHelp(errorKind(err));
      return;
    }
    preview.srcObject = stream;
    await fillPickers();
    startMeter();
    updateStart();
  }

  async function fillPickers() {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const current = {
      videoinput: stream.getVideoTracks()[0] && stream.getVideoTracks()[0].getSettings().deviceId,
      audioinput: stream.getAudioTracks()[0] && stream.getAudioTracks()[0].getSettings().deviceId,
    };
    for (const [select, kind] of [[cameraSelect, "videoinput"], [micSelect, "audioinput"]]) {
      select.textContent = "";
      devices.filter((d) => d.kind === kind).forEach((d, i) => {
        const option = document.createElement("option");
        option.value = d.deviceId;
        option.textContent = d.label || `${select.previousElementSibling.textContent} ${i + 1}`;
        option.selected = d.deviceId === current[kind];
        select.appendChild(option);
      });
      select.disabled = select.options.length < 2;
    }
  }

  function startMeter() {
    const Ctx = window.AudioContext || window.webkitAudioContext;
    if (!Ctx || !stream.getAudioTracks().length) return;
    if (meter) meter.context.close();
    const context = new Ctx();
    const analyser = context.createAnalyser();
    analyser.fftSize = 512;
    context.createMediaStreamSource(stream).connect(analyser);
    const data = new Uint8Array(analyser.fftSize);
    const bar = $("mic-level");
    meter = { context };
    const draw = () => {
      if (meter.context !== context) return;
      analyser.getByteTimeDomainData(data);
      let peak = 0;
      for (const v of data) peak = Math.max(peak, Math.abs(v - 128));
      bar.style.width = Math.min(100, Math.round(peak / 128 * 250)) + "%";
      requestAnimationFrame(draw);
    };
    draw();
    // Phones start audio only after a touch.
    document.addEventListener("click", () => context.resume(), { once: true });
  }

  function updateStart() {
    startButton.disabled = !(stream && consent.checked);
  }

  cameraSelect.addEventListener("change", () => openDevices(cameraSelect.value, micSelect.value));
  micSelect.addEventListener("change", () => openDevices(cameraSelect.value, micSelect.value));
  consent.addEventListener("change", updateStart);
  help.querySelector("[data-retry]").addEventListener("click", () => openDevices());

  startButton.addEventListener("click", async () => {
    startButton.disabled = true;
    const error = $("start-error");
    error.hidden = true;
    const body = new FormData();
    body.append("accept", "1");
    let response;
    try {
      response = await fetch(root.dataset.consentUrl, {
        method: "POST", body, headers: { "X-CSRFToken": csrf }, credentials: "same-origin" });
    } catch (err) {
      response = null;
    }
    if (!response || !response.ok) {
      let message = root.dataset.networkError || "";
      try { message = (await response.json()).error || message; } catch (err) { /* keep */ }
      error.textContent = message;
      error.hidden = !message;
      startButton.disabled = false;
      return;
    }
    beginCall();
  });

  function status(text) { $("call-status").textContent = text; }

  function beginCall() {
    $("devices-view").hidden = true;
    $("call-view").hidden = false;
    const local = $("local");
    local.srcObject = stream;
    call = new window.VideoARCall({
      url: root.dataset.ws,
      iceServers: JSON.parse(root.dataset.ice || "[]"),
      stream,
      remoteVideo: $("remote"),
      onStatus: (value) => {
        if (value === "connected" && agentPresent) status(root.dataset.agentIn);
        else status(root.dataset["status" + value[0].toUpperCase() + value.slice(1)] || "");
      },
      onError: (text) => status(text),
      onEvent: onEvent,
    });
    call.start();
  }

  function onEvent(message) {
    switch (message.event) {
      case "capture_requested":
        if (message.kind === "face") takeFace(message.capture); else takeStill(message.capture);
        break;
      case "face_decided":
        if (message.accepted) showGuide(false);
        break;
      case "password_requested":
        openPassword();
        break;
      case "recording":
        $("rec-indicator").hidden = !message.on;
        break;
      case "peer":
        if (message.role === "agent") {
          // A closed connection that is not the current one (a rejoin replaced it) says nothing.
          if (message.state !== "connected" && message.conn && message.conn !== otherConn) break;
          if (message.state === "connected") otherConn = message.conn;
          agentPresent = message.state === "connected";
          status(agentPresent ? root.dataset.agentIn : root.dataset.agentOut);
        }
        break;
      case "media_state":
        if (message.state === "connected") {
          status(agentPresent ? root.dataset.agentIn : root.dataset.statusConnected);
        }
        break;
      case "ended":
        finish("ended-view");
        break;
      case "superseded":
        finish("replaced-view");
        break;
      default:
        break;
    }
  }

  function finish(view) {
    if (call) call.close(false);
    if (stream) stream.getTracks().forEach((t) => t.stop());
    $("call-view").hidden = true;
    $(view).hidden = false;
  }

  document.addEventListener("click", (event) => {
    if (event.target.closest("[data-reload]")) location.reload();
  });

  // A still or the face photo, taken from the camera's own frames at its full resolution.
  async function grab() {
    const track = stream.getVideoTracks()[0];
    const video = $("local");
    if (window.ImageCapture && track) {
      try {
        const bitmap = await new ImageCapture(track).grabFrame();
        return toJpeg(bitmap, bitmap.width, bitmap.height);
      } catch (err) { /* fall back to the video element */ }
    }
    return toJpeg(video, video.videoWidth, video.videoHeight);
  }

  function toJpeg(source, width, height) {
    const canvas = document.createElement("canvas");
    canvas.width = width;
    canvas.height = height;
    canvas.getContext("2d").drawImage(source, 0, 0, width, height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.92));
  }

  async function send(captureId, blob) {
    const body = new FormData();
    body.append("image", blob, "captura.jpg");
    const url = root.dataset.captureUrl.replace(/\/0$/, "/" + captureId);
    for (let attempt = 0; attempt < 4; attempt++) {
      try {
        const response = await fetch(url, { method: "POST", body, headers: { "X-CSRFToken": csrf },
                                             credentials: "same-origin" });
        if (response.ok || response.status < 500) return response.ok;
      } catch (err) { /* network: try again */ }
      await new Promise((r) => setTimeout(r, 1000 * (attempt + 1)));
    }
    return false;
  }

  async function takeStill(captureId) {
    const note = $("still-note");
    note.hidden = false;
    await new Promise((r) => setTimeout(r, 1200));
    const blob = await grab();
    await send(captureId, blob);
    note.hidden = true;
  }

  function showGuide(on) {
    $("face-guide").hidden = !on;
    document.querySelector("#call-view .stage").classList.toggle("framing", on);
    if (on) $("face-guide").scrollIntoView({ block: "center" });
  }

  async function takeFace(captureId) {
    const countdown = $("face-countdown");
    showGuide(true);
    for (let n = 3; n > 0; n--) {
      countdown.textContent = String(n);
      await new Promise((r) => setTimeout(r, 1000));
    }
    countdown.textContent = root.dataset.faceWait || "";
    const blob = await grab();
    await send(captureId, blob);
  }

  // "Trocar câmera": front ↔ rear on a phone, the next camera on a computer.
  $("switch-camera").addEventListener("click", async () => {
    const cameras = (await navigator.mediaDevices.enumerateDevices())
      .filter((d) => d.kind === "videoinput");
    const currentId = stream.getVideoTracks()[0].getSettings().deviceId;
    let constraints;
    if (cameras.length > 2 || !cameras.some((c) => /front|back|rear|frontal|traseira/i.test(c.label))) {
      const index = cameras.findIndex((c) => c.deviceId === currentId);
      const next = cameras[(index + 1) % cameras.length];
      constraints = videoConstraints(next && next.deviceId);
    } else {
      facing = facing === "user" ? "environment" : "user";
      constraints = videoConstraints(null);
    }
    stream.getVideoTracks()[0].stop();  // phones open one camera at a time
    try {
      const fresh = await navigator.mediaDevices.getUserMedia({ video: constraints });
      await call.replaceVideo(fresh.getVideoTracks()[0]);
      $("local").srcObject = stream;
    } catch (err) {
      const fresh = await navigator.mediaDevices.getUserMedia({ video: videoConstraints(currentId) });
      await call.replaceVideo(fresh.getVideoTracks()[0]);
    }
  });

  // "Cadastre sua senha"
  const dialog = $("password-dialog");
  let passwordForm = dialog.innerHTML;
  function openPassword() {
    dialog.innerHTML = passwordForm;
    if (window.htmx) window.htmx.process(dialog);
    if (!dialog.open) dialog.showModal();
    const field = dialog.querySelector("#password");
    if (field) field.focus();
  }
  // A refused password comes back as 422 with the form and its message: show it.
  document.addEventListener("htmx:beforeSwap", (event) => {
    if (event.detail.xhr.status === 422 && dialog.contains(event.detail.elt)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });
  dialog.addEventListener("click", (event) => {
    if (event.target.closest("[data-close-dialog]")) dialog.close();
  });
  dialog.addEventListener("cancel", (event) => {
    // The password is needed: closing with Esc only while it is not yet set.
    if (!dialog.querySelector("[data-close-dialog]")) event.preventDefault();
  });

  window.addEventListener("pagehide", () => { if (call) call.close(true); });

  openDevices();
})();
