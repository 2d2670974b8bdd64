// The AGP report page: the Print button (the CSP allows no inline handlers).
"use strict";
(function () {
  const button = document.getElementById("print");
  if (button) button.addEventListener("click", function () { window.print(); });
})();
