// Images as input. A model that sees images (its <option data-vision="true">) is sent an attached image as an
// image; any other reads only the image's text (OCR). While an image is attached and the chosen model cannot see
// images, the composer says so (#vision-note), whenever either changes: a model picked, a file staged or removed.
(function () {
  "use strict";

  function update() {
    var note = document.getElementById("vision-note");
    var select = document.getElementById("model");
    if (!note || !select) return;
    var option = select.options[select.selectedIndex];
    var sees = !!option && option.getAttribute("data-vision") === "true";
    var image = !!document.querySelector('#attachments .chip[data-kind="image"]');
    note.hidden = sees || !image;
  }

  document.addEventListener("change", function (event) {
    if (event.target && event.target.id === "model") update();
  });
  // The chips are replaced by htmx (staging a file, removing one, the socket's answer clearing them), each time
  // as a new #attachments inside the drop zone: watching the zone sees every way they change.
  function watch() {
    var zone = document.getElementById("drop-zone");
    if (zone && window.MutationObserver) new MutationObserver(update).observe(zone, {childList: true, subtree: true});
    update();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", watch);
  else watch();
})();
