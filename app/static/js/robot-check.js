// "Não sou um robô": wires the vendored ALTCHA widget (external build) to this app.
// - registers the PBKDF2 worker served from /static (no blob: or inline code needed);
// - gives the widget the page's own texts (rendered by Flask-Babel in data-strings);
// - tells screen readers what the check is doing (a polite status region);
// - keeps a solved form from being sent twice, and waits while the check is running.
const ALGORITHMS = ["PBKDF2/SHA-256", "PBKDF2/SHA-384", "PBKDF2/SHA-512"];

function setUp(box) {
  const widget = box.querySelector("altcha-widget");
  const status = box.querySelector("[data-robot-check-status]");
  const strings = JSON.parse(box.dataset.strings);
  const language = box.dataset.language;
  const altcha = globalThis.$altcha;

  for (const algorithm of ALGORITHMS) {
    if (!altcha.algorithms.has(algorithm)) {
      altcha.algorithms.set(algorithm, () => new Worker(box.dataset.worker));
    }
  }
  altcha.i18n.set(language, { ...(altcha.i18n.get("en") || {}), ...strings });

  const say = (text) => { status.textContent = text; };
  widget.addEventListener("statechange", (event) => {
    const state = event.detail.state;
    // Errors and expiry already reach screen readers through the widget's alert popover.
    if (state === "verifying") say(strings.verifying);
    else if (state === "verified") say(strings.verified);
    else say("");
  });

  // The server's refusal (if the page came back with one) describes the checkbox.
  if (box.dataset.errorId) {
    whenRendered(widget, (checkbox) => {
      checkbox.setAttribute("aria-describedby", box.dataset.errorId);
      checkbox.setAttribute("aria-invalid", "true");
    });
  }
}

function whenRendered(widget, callback) {
  const find = () => widget.querySelector('input[type="checkbox"]');
  const found = find();
  if (found) return callback(found);
  const observer = new MutationObserver(() => {
    const checkbox = find();
    if (checkbox) {
      observer.disconnect();
      callback(checkbox);
    }
  });
  observer.observe(widget, { childList: true, subtree: true });
}

// Runs after the widget's own capture-phase listener, which starts the check when the
// form is sent unchecked (auto="onsubmit") and sends it again once solved.
document.addEventListener("submit", (event) => {
  const form = event.target;
  const widget = form.querySelector("[data-robot-check] altcha-widget");
  if (!widget || event.defaultPrevented) return;
  const state = typeof widget.getState === "function" ? widget.getState() : null;
  if (state === "verifying") {
    event.preventDefault();
    return;
  }
  if (state === "verified") {
    const buttons = form.querySelectorAll('button[type="submit"], button:not([type])');
    // Disabled after the event, so the browser still sends the form.
    setTimeout(() => buttons.forEach((b) => { b.disabled = true; }));
  }
});

// Coming back with the Back button shows a fresh, usable form.
window.addEventListener("pageshow", (event) => {
  if (!event.persisted) return;
  document.querySelectorAll("form [data-robot-check]").forEach((box) => {
    box.closest("form").querySelectorAll("button").forEach((b) => { b.disabled = false; });
  });
});

customElements.whenDefined("altcha-widget").then(() => {
  document.querySelectorAll("[data-robot-check]").forEach(setUp);
});
