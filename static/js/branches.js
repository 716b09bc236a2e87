// The inline prompt editor (templates/chat/_prompt_editor.html): it opens focused with the cursor at the end,
// Escape cancels it, Ctrl/Cmd+Enter saves and sends. Up in an empty composer opens the last turn's editor (chat.js
// clicks its `.edit-prompt` button).
(function () {
  "use strict";

  document.addEventListener("htmx:afterSwap", function () {
    var editor = document.querySelector(".prompt-editor textarea");
    if (editor && !editor.dataset.focused) {
      editor.dataset.focused = "1";
      editor.focus();
      editor.setSelectionRange(editor.value.length, editor.value.length);
    }
  });

  // Capture phase: Escape here closes the editor and must not also stop a running answer (chat.js).
  document.addEventListener(
    "keydown",
    function (event) {
      var target = event.target;
      if (event.isComposing || !target.closest || !target.closest(".prompt-editor")) return;
      var editor = target.closest(".prompt-editor");
      if (event.key === "Escape") {
        event.preventDefault();
        event.stopPropagation();
        var cancel = editor.querySelector(".cancel-edit");
        if (cancel) cancel.click();
      } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey) && target.tagName === "TEXTAREA") {
        event.preventDefault();
        if (target.value.trim()) editor.requestSubmit();
      }
    },
    true
  );
})();
