// The evidence page's script: the same REST API as any client, from this origin.
// The API key is kept in sessionStorage (this tab only) and sent as a header, never in a URL;
// downloads go through short-lived signed links, which a browser can follow without a header.
// Everything a server or a user wrote reaches the page as text (textContent), never as HTML.
"use strict";

(() => {
  const API = "api/v1";
  const PAGE_SIZE = 25;
  const KEY_ITEM = "kmflow.apiKey";
  const ENGAGEMENT_ITEM = "kmflow.engagement";
  const LINK_SECONDS = 300;

  const $ = (id) => document.getElementById(id);
  const state = { engagement: "", cursor: null, nextCursor: null };

  function authHeaders() {
    const key = $("api-key").value.trim();
    return key ? { Authorization: `Bearer ${key}` } : {};
  }

  // An Idempotency-Key per file, so a retry of the same file never stores it twice.
  // crypto.randomUUID needs a secure context; getRandomValues works everywhere.
  function newIdempotencyKey() {
    const bytes = crypto.getRandomValues(new Uint8Array(16));
    return "page-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // "401 unauthorized: missing API key ..." from the API's JSON error body.
  function describeError(status, text) {
    try {
      const body = JSON.parse(text);
      if (body && body.error) return `${status} ${body.error}: ${body.detail}`;
    } catch (_) {
      // not JSON: a proxy's page, say
    }
    return `${status}: the server answered without an explanation`;
  }

  function showError(message) {
    $("error").textContent = message;
  }

  async function api(path, options = {}) {
    let response;
    try {
      response = await fetch(`${API}/${path}`, {
        ...options,
        headers: { ...authHeaders(), ...(options.headers || {}) },
      });
    } catch (_) {
      throw new Error("the server cannot be reached; check the connection and try again");
    }
    if (!response.ok) throw new Error(describeError(response.status, await response.text()));
    return response;
  }

  function formatSize(bytes) {
    const units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) {
      value /= 1024;
      unit += 1;
    }
    return unit === 0 ? `${bytes} bytes` : `${value.toFixed(1)} ${units[unit]}`;
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  // Records on this page that hold the same bytes as an older one on it: the newest first,
  // so a record's original is the last one with its hash.
  function duplicateHints(items) {
    const oldest = new Map();
    for (const item of items) oldest.set(item.content_hash, item);
    const hints = new Map();
    for (const item of items) {
      const original = oldest.get(item.content_hash);
      if (original.id !== item.id) hints.set(item.id, `same bytes as ${original.file_name}`);
    }
    return hints;
  }

  function downloadCell(item) {
    const td = document.createElement("td");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = "Download";
    button.setAttribute("aria-label", `Download ${item.file_name}`);
    const link = document.createElement("a");
    link.className = "signed-link";
    link.hidden = true;
    button.addEventListener("click", () => download(item, link));
    td.append(button, " ", link);
    return td;
  }

  async function download(item, link) {
    showError("");
    try {
      const path = `evidence/${encodeURIComponent(item.engagement_id)}/${encodeURIComponent(item.id)}/download-link`;
      const response = await api(path, {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ expires_in: LINK_SECONDS }),
      });
      const issued = await response.json();
      link.href = issued.url;
      link.hidden = false;
      link.textContent = issued.expires_at
        ? `link until ${new Date(issued.expires_at).toLocaleTimeString()}`
        : "link";
      link.setAttribute("aria-label", `Download link for ${item.file_name}`);
      link.click();
    } catch (error) {
      showError(`Download of ${item.file_name} failed: ${error.message}`);
    }
  }

  function renderRows(items) {
    const hints = duplicateHints(items);
    const rows = items.map((item) => {
      const tr = document.createElement("tr");
      tr.dataset.evidenceId = item.id;
      tr.append(
        cell(item.file_name),
        cell(formatSize(item.size_bytes)),
        cell(item.stored_at.replace("T", " ").slice(0, 19)),
        cell(item.content_hash, "hash"),
        cell(hints.get(item.id) || ""),
        downloadCell(item),
      );
      return tr;
    });
    $("evidence-rows").replaceChildren(...rows);
  }

  async function loadPage(cursor) {
    if (!state.engagement) return;
    const query = new URLSearchParams({ limit: String(PAGE_SIZE) });
    if (cursor) query.set("cursor", cursor);
    try {
      const response = await api(`evidence/${encodeURIComponent(state.engagement)}?${query}`);
      const page = await response.json();
      state.cursor = cursor;
      state.nextCursor = page.next_cursor;
      renderRows(page.items);
      const shown = page.items.length;
      $("list-summary").textContent = shown
        ? `${state.engagement}: ${shown} record${shown === 1 ? "" : "s"} on this page, newest first.`
        : `${state.engagement} holds no evidence yet.`;
      $("next-page").disabled = !page.next_cursor;
      $("first-page").disabled = !cursor;
    } catch (error) {
      showError(`Listing ${state.engagement} failed: ${error.message}`);
    }
  }

  // One file's upload, with a progress bar; resolves when it is stored or has failed.
  function upload(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.name;
    const progress = document.createElement("progress");
    progress.max = Math.max(file.size, 1);
    progress.value = 0;
    progress.setAttribute("aria-label", `Upload of ${file.name}`);
    const result = document.createElement("span");
    result.setAttribute("role", "status");
    item.append(name, progress, result);
    $("uploads").prepend(item);
    const idempotencyKey = newIdempotencyKey();

    const send = () =>
      new Promise((resolve) => {
        result.className = "";
        result.textContent = "uploading";
        const form = new FormData();
        form.append("engagement_id", state.engagement);
        form.append("file", file, file.name);
        const request = new XMLHttpRequest();
        request.open("POST", `${API}/evidence/upload`);
        for (const [header, value] of Object.entries(authHeaders())) {
          request.setRequestHeader(header, value);
        }
        request.setRequestHeader("Idempotency-Key", idempotencyKey);
        request.upload.addEventListener("progress", (event) => {
          if (event.lengthComputable) {
            progress.max = event.total;
            progress.value = event.loaded;
          }
        });
        request.addEventListener("load", () => {
          if (request.status === 201) {
            const record = JSON.parse(request.responseText);
            progress.value = progress.max;
            const duplicates = record.duplicate_of || [];
            result.textContent = `stored, sha256 ${record.content_hash}` +
              (duplicates.length ? ` (same bytes as ${duplicates.length} earlier upload(s))` : "");
            result.className = "digest";
            resolve(true);
          } else {
            failed(describeError(request.status, request.responseText), request.status >= 500);
            resolve(false);
          }
        });
        request.addEventListener("error", () => {
          failed("the connection failed before an answer", true);
          resolve(false);
        });
        request.send(form);
      });

    // A retry sends the same Idempotency-Key: if the first attempt was stored after all, the
    // server answers its record instead of storing the file again.
    function failed(message, retryable) {
      result.className = "failed";
      result.textContent = `failed: ${message}`;
      if (!retryable) return;
      const retry = document.createElement("button");
      retry.type = "button";
      retry.textContent = "Retry";
      retry.setAttribute("aria-label", `Retry the upload of ${file.name}`);
      retry.addEventListener("click", async () => {
        retry.remove();
        if (await send()) await loadPage(null);
      });
      item.append(" ", retry);
    }
    return send();
  }

  async function uploadAll(files) {
    showError("");
    if (!state.engagement) {
      showError("Open an engagement first: enter its ID above.");
      return;
    }
    await Promise.all(Array.from(files, upload));
    await loadPage(null);
  }

  function openEngagement(event) {
    event.preventDefault();
    showError("");
    const input = $("engagement");
    if (!input.checkValidity()) {
      showError("The engagement ID is 1-128 letters, digits, _ . or -, starting with a letter or digit.");
      input.focus();
      return;
    }
    state.engagement = input.value.trim();
    sessionStorage.setItem(ENGAGEMENT_ITEM, state.engagement);
    sessionStorage.setItem(KEY_ITEM, $("api-key").value.trim());
    $("list-heading").textContent = `Stored evidence of ${state.engagement}`;
    loadPage(null);
  }

  function setUpDropZone() {
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      uploadAll(event.dataTransfer.files);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("api-key").value = sessionStorage.getItem(KEY_ITEM) || "";
    $("api-key").addEventListener("change", () =>
      sessionStorage.setItem(KEY_ITEM, $("api-key").value.trim()),
    );
    $("access-form").addEventListener("submit", openEngagement);
    $("file-input").addEventListener("change", async (event) => {
      await uploadAll(event.target.files);
      event.target.value = "";
    });
    $("next-page").addEventListener("click", () => loadPage(state.nextCursor));
    $("first-page").addEventListener("click", () => loadPage(null));
    setUpDropZone();
    const engagement = sessionStorage.getItem(ENGAGEMENT_ITEM);
    if (engagement) {
      $("engagement").value = engagement;
      $("access-form").requestSubmit();
    }
  });
})();
