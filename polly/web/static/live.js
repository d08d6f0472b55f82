// Live results without a full reload: every element with data-live="URL" is refreshed from that
// URL every data-every seconds (default 2) while the page is visible. No framework.
document.addEventListener("DOMContentLoaded", () => {
  for (const el of document.querySelectorAll("[data-live]")) {
    const every = 1000 * Number(el.dataset.every || 2);
    const refresh = async () => {
      if (document.visibilityState !== "visible") return;
      try {
        const r = await fetch(el.dataset.live, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
        if (r.ok) el.innerHTML = await r.text();
      } catch (e) { /* the next tick tries again */ }
    };
    setInterval(refresh, every);
  }
});
