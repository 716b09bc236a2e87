// Attachments. Files never travel in the socket's frames: picking files (or dropping them anywhere on the
// conversation, which hands them to the same picker) makes htmx POST them to the staging endpoint, whose answer
// (the message's file chips, or a refusal naming the file) replaces #attachments. The turn then sends their ids.
(function () {
  "use strict";

  var uploading = 0;

  function hasFiles(event) {
    var types = event.dataTransfer && event.dataTransfer.types;
    return !!types && Array.prototype.indexOf.call(types, "Files") !== -1;
  }

  function dropZone(event) {
    return event.target && event.target.closest ? event.target.closest(".conversation") : null;
  }

  function setDragging(on) {
    var composer = document.getElementById("composer");
    if (composer) composer.classList.toggle("dragging", on);
  }

  document.addEventListener("dragover", function (event) {
    if (!hasFiles(event) || !dropZone(event)) return;
    event.preventDefault(); // allows the drop (the browser would otherwise open the file)
    event.dataTransfer.dropEffect = "copy";
    setDragging(true);
  });

  document.addEventListener("dragleave", function (event) {
    if (!event.relatedTarget || !dropZone({target: event.relatedTarget})) setDragging(false);
  });

  document.addEventListener("drop", function (event) {
    if (!hasFiles(event) || !dropZone(event)) return;
    event.preventDefault();
    setDragging(false);
    var picker = document.getElementById("file-picker");
    if (!picker || !event.dataTransfer.files.length) return;
    picker.files = event.dataTransfer.files;
    picker.dispatchEvent(new Event("change", {bubbles: true}));
  });

  function fromPicker(event) {
    // beforeSwap is fired on the target; the element that made the request is in requestConfig.
    var detail = event.detail || {};
    var elt = (detail.requestConfig && detail.requestConfig.elt) || detail.elt;
    return !!elt && elt.id === "file-picker";
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    if (fromPicker(event)) uploading += 1;
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    if (!fromPicker(event)) return;
    uploading = Math.max(0, uploading - 1);
    var picker = document.getElementById("file-picker");
    if (picker) picker.value = ""; // so that picking the same file again fires `change` again
  });

  // A refused file comes back as a 4xx carrying the chips that stay and the reason: show it, do not drop it.
  document.addEventListener("htmx:beforeSwap", function (event) {
    var status = event.detail.xhr && event.detail.xhr.status;
    if (fromPicker(event) && status >= 400 && status < 500) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  document.addEventListener("htmx:wsConfigSend", function (event) {
    if (!event.target || event.target.id !== "composer") return;
    // The message names its staged files by id; the picker's File objects have no place in a JSON frame.
    delete event.detail.parameters.files;
    // A message sent while its files are still uploading would leave them behind.
    if (uploading > 0) {
      event.preventDefault();
      var error = document.getElementById("composer-error");
      if (error) error.textContent = "Wait a moment: the files are still uploading.";
    }
  });
})();
