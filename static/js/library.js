// Folders, tags and temporary chats in the page (the server side is chat/library.py and chat/consumers.py):
// dragging a sidebar chat onto a folder's name files it there (the chat's Organize menu does the same from the
// keyboard), the folders that were open stay open when the sidebar is redrawn, a refused change shows its message,
// and the composer says what a temporary chat is while its toggle is on. No inline scripts: the CSP forbids them.
(function () {
  "use strict";

  var CHAT_TYPE = "application/x-querynox-chat";
  var OPEN_KEY = "querynox.openFolders";

  function csrfHeaders() {
    try {
      return JSON.parse(document.body.getAttribute("hx-headers") || "{}");
    } catch (error) {
      return {};
    }
  }

  // --- drag a chat onto a folder ---------------------------------------------------------------------------------
  var dragged = null; // the move URL of the chat being dragged

  function dropTarget(node) {
    return node && node.closest ? node.closest("[data-drop-folder]") : null;
  }

  function setDragging(on) {
    document.body.classList.toggle("dragging-chat", on);
    var unfiled = document.querySelectorAll(".drop-unfiled");
    for (var i = 0; i < unfiled.length; i++) unfiled[i].hidden = !on;
    if (!on) {
      var over = document.querySelectorAll(".drop-over");
      for (var j = 0; j < over.length; j++) over[j].classList.remove("drop-over");
    }
  }

  document.addEventListener("dragstart", function (event) {
    var link = event.target.closest && event.target.closest("a.chat-link[data-move-url]");
    if (!link) return;
    dragged = link.getAttribute("data-move-url");
    event.dataTransfer.setData(CHAT_TYPE, dragged);
    event.dataTransfer.effectAllowed = "move";
    setDragging(true);
  });

  document.addEventListener("dragend", function () {
    dragged = null;
    setDragging(false);
  });

  document.addEventListener("dragover", function (event) {
    var target = dropTarget(event.target);
    if (!target || !dragged) return;
    event.preventDefault(); // allows the drop
    event.dataTransfer.dropEffect = "move";
    target.classList.add("drop-over");
  });

  document.addEventListener("dragleave", function (event) {
    var target = dropTarget(event.target);
    if (target && !target.contains(event.relatedTarget)) target.classList.remove("drop-over");
  });

  document.addEventListener("drop", function (event) {
    var target = dropTarget(event.target);
    if (!target || !dragged) return;
    event.preventDefault();
    var url = dragged;
    setDragging(false);
    dragged = null;
    // The answer's HX-Trigger (chats-changed) redraws the sidebar; nothing is swapped here.
    window.htmx.ajax("POST", url, {
      source: target,
      swap: "none",
      values: { folder: target.getAttribute("data-drop-folder") },
      headers: csrfHeaders(),
    });
  });

  // --- folders stay open across redraws ---------------------------------------------------------------------------
  function openFolders() {
    try {
      return JSON.parse(window.sessionStorage.getItem(OPEN_KEY) || "[]");
    } catch (error) {
      return [];
    }
  }

  document.addEventListener(
    "toggle",
    function (event) {
      var folder = event.target;
      if (!folder.matches || !folder.matches("details.folder")) return;
      var id = folder.getAttribute("data-folder-id");
      var open = openFolders().filter(function (other) { return other !== id; });
      if (folder.open) open.push(id);
      try {
        window.sessionStorage.setItem(OPEN_KEY, JSON.stringify(open.slice(-50)));
      } catch (error) { /* storage full or off: folders simply start closed */ }
    },
    true // toggle does not bubble
  );

  function reopenFolders(root) {
    var open = openFolders();
    if (!open.length || !root.querySelectorAll) return;
    var folders = root.querySelectorAll("details.folder");
    for (var i = 0; i < folders.length; i++) {
      if (open.indexOf(folders[i].getAttribute("data-folder-id")) !== -1) folders[i].open = true;
    }
  }

  document.addEventListener("htmx:load", function (event) { reopenFolders(event.detail.elt); });
  document.addEventListener("DOMContentLoaded", function () { reopenFolders(document); });

  // --- refusals are shown, not dropped ----------------------------------------------------------------------------
  document.addEventListener("htmx:beforeSwap", function (event) {
    var detail = event.detail;
    var status = detail.xhr ? detail.xhr.status : 0;
    if (status < 400 || status >= 500 || !detail.elt || !detail.elt.closest) return;
    var form = detail.elt.closest("[data-error-target]");
    var errorBox = form ? document.querySelector(form.getAttribute("data-error-target")) : null;
    if (errorBox) {
      // The body is the message, HTML-escaped by the server.
      detail.shouldSwap = true;
      detail.isError = false;
      detail.target = errorBox;
      detail.swapOverride = "innerHTML";
    } else if (detail.elt.closest("[data-swap-errors]")) {
      detail.shouldSwap = true; // the chat menu answers itself with the refusal inside it
      detail.isError = false;
    }
  });

  // --- the temporary-chat toggle ----------------------------------------------------------------------------------
  document.addEventListener("change", function (event) {
    if (event.target.id !== "temporary-chat") return;
    var hint = document.getElementById("temporary-hint");
    if (hint) hint.hidden = !event.target.checked;
    var composer = document.getElementById("composer");
    if (composer) composer.classList.toggle("temporary", event.target.checked);
  });
})();
