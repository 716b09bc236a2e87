// Small behaviours htmx does not cover: the keyboard (Enter sends, Shift+Enter adds a line, Escape stops the
// running answer or closes the sidebar, Up in an empty composer edits the last prompt), the collapsible sidebar,
// clearing the prompt once the server accepted it, keeping the address bar on the current chat, following the
// newest tokens while the reader is at the end, and telling the server which branch this page shows.
(function () {
  "use strict";

  function sidebarOpen() {
    var app = document.querySelector(".app");
    return !!app && app.classList.contains("sidebar-open");
  }

  function setSidebar(open) {
    var app = document.querySelector(".app");
    var toggle = document.getElementById("sidebar-toggle");
    if (!app || !toggle) return;
    app.classList.toggle("sidebar-open", open);
    toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (open) {
      var first = document.querySelector("#sidebar a, #sidebar button");
      if (first) first.focus();
    } else if (document.activeElement && document.activeElement.closest("#sidebar")) {
      toggle.focus();
    }
  }

  document.addEventListener("click", function (event) {
    if (!event.target.closest) return;
    if (event.target.closest("#sidebar-toggle")) {
      setSidebar(!sidebarOpen());
    } else if (sidebarOpen() && event.target.closest(".sidebar-scrim")) {
      setSidebar(false);
    }
  });

  function lastRunningStop() {
    var stops = document.querySelectorAll("#messages article.turn button.stop");
    return stops.length ? stops[stops.length - 1] : null;
  }

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (event.isComposing) return;
    if (target.id === "prompt" && event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      if (target.value.trim()) target.form.requestSubmit();
      return;
    }
    if (event.key === "Escape") {
      if (target.closest && target.closest(".prompt-editor")) return; // the editor's own Escape (branches.js)
      if (sidebarOpen()) {
        setSidebar(false);
        event.preventDefault();
        return;
      }
      var stop = lastRunningStop();
      if (stop) {
        event.preventDefault();
        stop.click();
      }
      return;
    }
    if (target.id === "prompt" && event.key === "ArrowUp" && !target.value && !event.shiftKey) {
      // The edit itself belongs to the last turn's own edit button (.edit-prompt), wherever it is rendered.
      var edits = document.querySelectorAll("#messages article.turn .edit-prompt");
      if (edits.length) {
        event.preventDefault();
        edits[edits.length - 1].click();
      }
    }
  });

  // Following the newest tokens: only while the reader is at the end of the conversation (or has just sent a
  // prompt). Someone who scrolled up to read, or who switches versions of an earlier turn, stays where they are.
  var NEAR_END_PX = 48;

  function scrollToEnd() {
    var messages = document.getElementById("messages");
    if (messages) messages.scrollTop = messages.scrollHeight;
  }

  function atEnd() {
    var messages = document.getElementById("messages");
    return !messages || messages.scrollHeight - messages.scrollTop - messages.clientHeight <= NEAR_END_PX;
  }

  // The last turn shown is what a new prompt follows (the composer's parentId): another tab may have selected
  // another branch on the server since this page rendered.
  function rememberShownLeaf() {
    var field = document.getElementById("parent-id");
    if (!field) return;
    var turns = document.querySelectorAll("#messages article.turn");
    var last = turns.length ? turns[turns.length - 1] : null;
    field.value = last ? last.id.replace(/^turn-/, "") : "";
  }

  var followEnd = true; // measured before each swap, used after it

  // Older turns load above what the reader is looking at (templates/chat/_older_turns.html, in place of its
  // marker): the distance from the end is kept, so the turns they were reading stay where they were.
  var fromEnd = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var target = event.detail && event.detail.target;
    var messages = document.getElementById("messages");
    if (messages && target && target.classList && target.classList.contains("turns-older")) {
      fromEnd = messages.scrollHeight - messages.scrollTop;
    }
  });
  document.addEventListener("htmx:afterSwap", function () {
    var messages = document.getElementById("messages");
    if (fromEnd === null || !messages) return;
    messages.scrollTop = messages.scrollHeight - fromEnd;
    fromEnd = null;
  });

  document.addEventListener("htmx:oobBeforeSwap", function () { followEnd = atEnd(); });
  document.addEventListener("htmx:oobAfterSwap", onSwap);
  document.addEventListener("htmx:afterSwap", rememberShownLeaf);
  document.addEventListener("DOMContentLoaded", function () {
    rememberShownLeaf();
    scrollToEnd();
  });

  function onSwap(event) {
    // detail.target is the element that was swapped; after an outerHTML swap it is the old, detached one,
    // so values are read from the live document instead.
    var target = event.detail && event.detail.target;
    if (!target) return;
    var newTurn = target.id === "messages";
    if (newTurn) {
      // The server accepted the turn: the text now lives in the chat, so the box can be emptied.
      var prompt = document.getElementById("prompt");
      if (prompt) prompt.value = "";
    }
    if (target.id === "chat-location") {
      var marker = document.getElementById("chat-location");
      var url = marker && marker.getAttribute("data-url");
      if (url && window.location.pathname !== url) window.history.replaceState({}, "", url);
    }
    rememberShownLeaf();
    if (newTurn || followEnd) scrollToEnd();
  }
})();
