// A "Copy" button on every code block: a listing in a post (div.code > pre) or a listing's own page
// (div.code > table.codetable, one td.code per line). It copies the code as the reader sees it, without
// line numbers, and says so in a live region; offline, with the Clipboard API where the page is a
// secure context (https, localhost) and a hidden textarea otherwise.
(function () {
  "use strict";

  function codeOf(block) {
    // A listing's page has one table row per line, its indentation in no-break spaces (U+00A0).
    var lines = block.querySelectorAll("td.code");
    var text = lines.length
      ? Array.prototype.map.call(lines, function (cell) { return cell.textContent; }).join("").replace(/\u00a0/g, " ")
      : block.querySelector("pre").textContent;
    return text.replace(/\n$/, "");
  }

  function copyWithTextarea(text) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    var copied = document.execCommand("copy");
    document.body.removeChild(area);
    return copied ? Promise.resolve() : Promise.reject(new Error("copy refused"));
  }

  function copy(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text).catch(function () { return copyWithTextarea(text); });
    }
    return copyWithTextarea(text);
  }

  function addButton(block, status) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code btn btn-sm btn-outline-secondary";
    button.textContent = "Copy";
    button.setAttribute("aria-label", "Copy this code");
    var reset = null;
    function show(text, message) {  // for two seconds, then "Copy" again; a later click starts afresh
      window.clearTimeout(reset);
      button.textContent = text;
      status.textContent = message;
      reset = window.setTimeout(function () { button.textContent = "Copy"; }, 2000);
    }
    button.addEventListener("click", function () {
      copy(codeOf(block)).then(
        function () { show("Copied", "Code copied to the clipboard."); },
        function () { show("Copy failed", "The browser refused to copy."); }
      );
    });
    block.insertBefore(button, block.firstChild);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var blocks = document.querySelectorAll("div.code");
    if (!blocks.length) return;
    var status = document.createElement("div");
    status.className = "sr-only";
    status.setAttribute("role", "status");
    status.setAttribute("aria-live", "polite");
    document.body.appendChild(status);
    Array.prototype.forEach.call(blocks, function (block) { addButton(block, status); });
  });
})();
