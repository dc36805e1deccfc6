// Document import: each file going up gets a row with a progress bar, then its thumbnail;
// a refused file's message shows in its own section; "Você tem certeza?"; one submit only.
const sectionOf = (elt) => elt && elt.closest && elt.closest(".doc-kind");
const uploadForm = (elt) => elt && elt.closest && elt.closest("form.add-form, form.replace-form");

function showError(section, message) {
  const box = section.querySelector(".upload-errors");
  const p = document.createElement("p");
  p.className = "error";
  p.setAttribute("role", "alert");
  p.textContent = message;
  box.replaceChildren(p);
}

// Page numbers and counts as the client sees the list now ("Página 1", "(2)").
function refresh() {
  document.querySelectorAll(".doc-kind").forEach((section) => {
    const rows = section.querySelectorAll(".pages > .page-item:not(.pending)");
    rows.forEach((row, i) => {
      row.querySelectorAll("[data-page-number]").forEach((el) => {
        if (el.tagName === "IMG") el.alt = el.alt.replace(/\d+/, i + 1);
        else el.textContent = el.textContent.replace(/\d+/, i + 1);
      });
    });
    const count = section.querySelector("[data-count]");
    if (count) count.textContent = rows.length;
  });
}

document.addEventListener("htmx:beforeRequest", (event) => {
  const section = sectionOf(event.detail.elt);
  if (!section) return;
  section.querySelector(".upload-errors")?.replaceChildren();
  const form = uploadForm(event.detail.elt);
  if (!form) return;
  form.classList.add("uploading");
  const file = form.querySelector("input[type=file]").files[0];
  form.fileName = file ? file.name : "";
  let bar;
  if (form.classList.contains("add-form")) {
    // A new row at the end of the list, replaced by the page once it is stored.
    const row = section.querySelector("template.pending-page").content.firstElementChild.cloneNode(true);
    row.querySelector("[data-file-name]").textContent = form.fileName;
    section.querySelector(".pages").append(row);
    form.pendingRow = row;
    bar = row.querySelector("progress");
  } else {
    bar = form.closest(".page-item").querySelector(".upload-progress");
    bar.hidden = false;
  }
  bar.removeAttribute("value");  // indeterminate until the browser reports progress
  form.progressBar = bar;
});

document.addEventListener("htmx:xhr:progress", (event) => {
  const form = uploadForm(event.target);
  if (form && form.progressBar && event.detail.lengthComputable && event.detail.total) {
    form.progressBar.value = Math.round((event.detail.loaded / event.detail.total) * 100);
  }
});

document.addEventListener("htmx:beforeSwap", (event) => {
  const elt = event.detail.requestConfig.elt;
  const section = sectionOf(elt);
  if (!section) return;
  const status = event.detail.xhr.status;
  if (status === 401) {  // the session expired: the page says so
    event.detail.shouldSwap = false;
    window.location.reload();
  } else if (status >= 400) {  // the server's message, in this section's error area
    event.detail.shouldSwap = true;
    event.detail.isError = false;
    event.detail.target = section.querySelector(".upload-errors");
    event.detail.swapOverride = "innerHTML";
  } else {
    const form = uploadForm(elt);
    if (form && form.pendingRow) {
      event.detail.target = form.pendingRow;
      event.detail.swapOverride = "outerHTML";
    }
  }
});

function uploadFailed(event) {
  const section = sectionOf(event.detail.elt);
  if (section) showError(section, section.dataset.uploadFailed);
}
document.addEventListener("htmx:sendError", uploadFailed);
document.addEventListener("htmx:timeout", uploadFailed);

document.addEventListener("htmx:afterRequest", (event) => {
  const form = uploadForm(event.detail.elt);
  if (form) {
    // Say which file a message is about: "foto.jpg: O arquivo não é…".
    const error = event.detail.xhr && event.detail.xhr.status >= 400 && form.fileName &&
      sectionOf(form).querySelector(".upload-errors .error, .upload-errors .error-box p");
    if (error) {
      const name = document.createElement("strong");
      name.textContent = `${form.fileName}: `;
      error.prepend(name);
    }
    form.classList.remove("uploading");
    if (form.pendingRow && form.pendingRow.isConnected) form.pendingRow.remove();
    form.pendingRow = null;
    if (form.progressBar && form.progressBar.isConnected) form.progressBar.hidden = true;
    form.progressBar = null;
    const input = form.querySelector("input[type=file]");
    if (input) input.value = "";  // the same file may be picked again
  }
  refresh();
});

// "Enviar para análise" opens the "Você tem certeza?" dialog; "Cancela" (or Escape) closes it.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-confirm-dialog]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.confirmDialog);
    if (dialog && dialog.showModal) {
      event.preventDefault();
      dialog.showModal();
    }
  }
  const closer = event.target.closest("[data-close-dialog]");
  if (closer && closer.closest("dialog")) {
    event.preventDefault();
    closer.closest("dialog").close();
  }
});

// "Continuar" sends once, however many times it is pressed.
document.addEventListener("submit", (event) => {
  const once = event.target.querySelector("[data-once]");
  if (once) {
    if (once.dataset.sent) { event.preventDefault(); return; }
    once.dataset.sent = "1";
    once.setAttribute("aria-disabled", "true");
  }
});
