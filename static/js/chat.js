// Small behaviours htmx does not cover: Enter to send, clearing the prompt once the server accepted it,
// keeping the address bar on the current chat, and following the newest tokens.
(function () {
  "use strict";

  document.addEventListener("keydown", function (event) {
    var target = event.target;
    if (target.id === "prompt" && event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      if (target.value.trim()) target.form.requestSubmit();
    }
  });

  function scrollToEnd() {
    var messages = document.getElementById("messages");
    if (messages) messages.scrollTop = messages.scrollHeight;
  }

  document.addEventListener("htmx:oobAfterSwap", onSwap);
  document.addEventListener("DOMContentLoaded", scrollToEnd);

  function onSwap(event) {
    // detail.target is the element that was swapped; after an outerHTML swap it is the old, detached one,
    // so values are read from the live document instead.
    var target = event.detail && event.detail.target;
    if (!target) return;
    if (target.id === "messages") {
      // The server accepted the turn: the text now lives in the chat, so the box can be emptied.
      var prompt = document.getElementById("prompt");
      if (prompt) prompt.value = "";
    }
    if (target.id === "chat-location") {
      var marker = document.getElementById("chat-location");
      var url = marker && marker.getAttribute("data-url");
      if (url && window.location.pathname !== url) window.history.replaceState({}, "", url);
    }
    scrollToEnd();
  }
})();
