// The holder's A1 issuance page: password → key pair made here (WebCrypto) → PKCS#10 request →
// certificate → PKCS#12 protected by the same password, offered for download until the holder
// confirms it is saved → the termo signed with the new key. The private key never leaves this
// page except inside the .p12 file the holder downloads.
(function () {
  "use strict";
  const root = document.getElementById("issuance");
  if (!root) return;
  const csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];
  const form = document.getElementById("issue-form");
  const errorBox = document.getElementById("issue-error");
  const steps = document.getElementById("issue-steps");
  let p12 = null;
  let saved = false;

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify(body),
      credentials: "same-origin",
    });
    let data = {};
    try { data = await response.json(); } catch (e) { /* an HTML error page */ }
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function step(name) {
    steps.hidden = false;
    for (const li of steps.querySelectorAll("li")) {
      if (li.dataset.step === name) li.classList.add("current");
      else if (li.classList.contains("current")) { li.classList.remove("current"); li.classList.add("done"); }
    }
  }

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
  }

  function b64(bytes) {
    let s = "";
    for (const b of new Uint8Array(bytes)) s += String.fromCharCode(b);
    return btoa(s);
  }

  function unb64(text) {
    return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  }

  window.addEventListener("beforeunload", (event) => {
    if (p12 && !saved) { event.preventDefault(); event.returnValue = root.dataset.leaveWarning; }
  });

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const password = form.password.value;
    const button = document.getElementById("issue-button");
    button.disabled = true;
    let issued = false;
    try {
      step("password");
      await post(root.dataset.unlockUrl, {password});
      step("key");
      const keys = await window.VideoARKeys.generateKeyPair();
      const csr = await window.VideoARKeys.buildCsr(keys, {commonName: root.dataset.commonName});
      step("certificate");
      const cert = await post(root.dataset.requestUrl, {csr});
      issued = true;
      p12 = await window.VideoARKeys.buildPkcs12(keys, cert.certificate, cert.chain, password,
                                                 root.dataset.commonName);
      form.hidden = true;
      document.getElementById("cert-serial").textContent = cert.serial;
      document.getElementById("issue-done").hidden = false;
      if (cert.termo && cert.termo.to_be_signed) {
        step("termo");
        const signature = await window.VideoARKeys.signData(keys, unb64(cert.termo.to_be_signed));
        await post(root.dataset.termoUrl, {signature: b64(signature)});
        document.getElementById("termo-link").hidden = false;
      }
      step("done");
      steps.hidden = true;
    } catch (error) {
      fail(error.message || String(error));
      if (!issued) button.disabled = false;
    }
  });

  document.getElementById("download-button").addEventListener("click", () => {
    if (p12) window.VideoARKeys.download(p12, root.dataset.filename, "application/x-pkcs12");
  });
  const check = document.getElementById("saved-check");
  const savedButton = document.getElementById("saved-button");
  check.addEventListener("change", () => { savedButton.disabled = !check.checked; });
  savedButton.addEventListener("click", async () => {
    try {
      await post(root.dataset.savedUrl, {});
      saved = true;
      savedButton.disabled = true;
      document.getElementById("finished").hidden = false;
    } catch (error) {
      fail(error.message || String(error));
    }
  });
})();
