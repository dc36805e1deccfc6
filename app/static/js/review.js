// Review: zoom and rotate each page image. Zoomed in, the image grows from the top-left
// corner of its viewer, so that every part of it can be scrolled to.
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-zoom], [data-rotate]");
  if (!button) return;
  const viewer = button.closest("[data-viewer]").querySelector(".viewer");
  const img = viewer.querySelector("img");
  let zoom = parseFloat(img.dataset.zoom || "1");
  let angle = parseInt(img.dataset.angle || "0", 10);
  if (button.dataset.zoom === "in") zoom = Math.min(zoom * 1.5, 6);
  if (button.dataset.zoom === "out") zoom = Math.max(zoom / 1.5, 1);
  if (button.hasAttribute("data-rotate")) angle = (angle + 90) % 360;
  img.dataset.zoom = zoom;
  img.dataset.angle = angle;
  const zoomed = zoom > 1;
  viewer.classList.toggle("zoomed", zoomed);
  if (!zoomed) {
    img.style.transform = `rotate(${angle}deg)`;
    return;
  }
  // Turned about its top-left corner, then moved back into view (the scroll area only
  // reaches right and down).
  const w = img.offsetWidth * zoom;
  const h = img.offsetHeight * zoom;
  const shift = { 0: [0, 0], 90: [h, 0], 180: [w, h], 270: [0, w] }[angle];
  img.style.transform = `translate(${shift[0]}px, ${shift[1]}px) rotate(${angle}deg) scale(${zoom})`;
});
