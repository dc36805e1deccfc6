// The agent's console: "Entrar na conferência" opens the agent's camera, "Iniciar conferência"
// (htmx) starts the room and connects the call; room events refresh the side panel (captures,
// face photo, password, recording); "Compartilhar tela"; hang-up with "Sair" or "Encerrar
// conferência", each confirmed.
(function () {
  "use strict";

  const root = document.getElementById("agent-call");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const text = (name) => root.dataset[name] || "";
  let stream = null;
  let call = null;
  let sharing = null;
  let clientPresent = false;
  let otherConn = null;

  function status(value) { $("call-status").textContent = value; }
  function refreshPanel() { document.body.dispatchEvent(new Event("refresh-panel")); }
  function started() {
    const panel = $("console-panel");
    return (panel && panel.dataset.started === "1") || root.dataset.started === "1";
  }

  async function openCamera() {
    return navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 30 } },
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: true },
    });
  }

  $("enter").addEventListener("click", async () => {
    try {
      stream = await openCamera();
    } catch (err) {
      status(text("cameraError"));
      return;
    }
    $("local").srcObject = stream;
    $("enter").hidden = true;
    $("start").disabled = false;
    $("hangup").disabled = false;
    $("share-screen").disabled = false;
    if (started()) connect(); else status("");
  });

  function connect() {
    if (call || !stream) return;
    $("start-form").hidden = true;
    call = new window.VideoARCall({
      url: root.dataset.ws,
      iceServers: JSON.parse(root.dataset.ice || "[]"),
      stream,
      remoteVideo: $("remote"),
      onStatus: (value) => {
        if (value === "connected" && clientPresent) status(text("clientIn"));
        else status(text("status" + value[0].toUpperCase() + value.slice(1)));
      },
      onError: (message) => status(message),
      onEvent,
    });
    call.start();
  }

  function onEvent(message) {
    switch (message.event) {
      case "peer":
        if (message.role === "client") {
          // A closed connection that is not the current one (a rejoin replaced it) says nothing.
          if (message.state !== "connected" && message.conn && message.conn !== otherConn) break;
          if (message.state === "connected") otherConn = message.conn;
          clientPresent = message.state === "connected";
          status(clientPresent ? text("clientIn") : text("clientOut"));
        }
        break;
      case "left":
        if (message.role === "client") { clientPresent = false; status(text("clientOut")); }
        break;
      case "replaced":
        if (message.role === "client") status(text("clientReplaced"));
        break;
      case "media_lost":
        status(text("mediaLost"));
        refreshPanel();
        break;
      case "recording_error":
        status(text("disk"));
        break;
      case "ended":
        location.reload();
        return;
      case "superseded":
        status(text("superseded"));
        return;
      default:
        break;
    }
    refreshPanel();
  }

  // After "Iniciar conferência" the panel comes back started: connect the call.
  document.body.addEventListener("htmx:afterSwap", () => { if (started()) connect(); });

  // A capture the client has not sent yet: look again now and then (events may be missed).
  setInterval(() => {
    if (document.querySelector("[data-pending-capture]")) refreshPanel();
  }, 4000);

  // "Compartilhar tela": the screen replaces the camera until sharing stops (here or in the
  // browser's own "stop sharing" bar).
  async function backToCamera() {
    if (!sharing) return;
    const track = sharing;
    sharing = null;
    track.stop();
    $("share-screen").setAttribute("aria-pressed", "false");
    const camera = await openCamera();
    camera.getAudioTracks().forEach((t) => t.stop());
    await call.replaceVideo(camera.getVideoTracks()[0]);
    $("local").srcObject = stream;
  }

  $("share-screen").addEventListener("click", async () => {
    if (!call) return;
    if (sharing) { await backToCamera(); return; }
    let screen;
    try {
      screen = await navigator.mediaDevices.getDisplayMedia({ video: true });
    } catch (err) {
      return;
    }
    sharing = screen.getVideoTracks()[0];
    sharing.addEventListener("ended", backToCamera);
    await call.replaceVideo(sharing);
    $("share-screen").setAttribute("aria-pressed", "true");
  });

  // Hang-up: choose "Sair" or "Encerrar conferência", then confirm once more.
  const dialog = $("hangup-dialog");
  function step(name) {
    dialog.querySelectorAll("[data-step]").forEach((el) => { el.hidden = el.dataset.step !== name; });
  }
  $("hangup").addEventListener("click", () => { step("choose"); dialog.showModal(); });
  dialog.addEventListener("click", (event) => {
    const choose = event.target.closest("[data-choose]");
    if (choose) step(choose.dataset.choose);
    if (event.target.closest("[data-cancel]")) dialog.close();
  });
  $("confirm-leave").addEventListener("click", () => { if (call) call.close(true); });
  window.addEventListener("pagehide", () => { if (call) call.close(true); });
})();
