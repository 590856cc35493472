// kosmos view: the grid, the filters (kept in the page's address), the detail view and the export box.
// Every record text goes in as text (textContent); the one HTML from the server is a caption its task escaped.
"use strict";
(() => {
  const FILTERS = ["text", "classes", "min_score", "status", "phrase", "region", "sort"];
  const TYPED = new Set(["text", "classes", "min_score"]); // applied once typing pauses
  const PAGE = 60;
  const FRAME = { width: 240, height: 180 }; // the image area of a card, CSS pixels
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  const state = {
    info: null,
    query: {},
    cards: [],
    total: 0,
    seq: 0, // the grid's generation: answers for an older one are dropped
    loading: null,
    detail: null, // {position, card} while the detail view is open
  };

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) {
      if (value !== null && value !== undefined) node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    return node;
  }

  // the reading of the results file this page shows: the server refuses an older one (409) once the file changed
  function versioned(url) {
    if (!state.info) return url;
    const joint = url.endsWith("?") ? "" : url.includes("?") ? "&" : "?";
    return `${url}${joint}v=${state.info.version}`;
  }

  async function getJSON(url) {
    const response = await fetch(versioned(url), { headers: { Accept: "application/json" } });
    const body = await response.json().catch(() => ({}));
    if (response.status === 409) {
      say("The results file changed: reading it again\u2026");
      location.reload(); // the address keeps the filters
    }
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }

  function params(extra = {}) {
    const out = new URLSearchParams();
    for (const name of FILTERS) if (state.query[name]) out.set(name, state.query[name]);
    for (const [name, value] of Object.entries(extra)) out.set(name, value);
    return out.toString();
  }

  function writeAddress() {
    const extra = state.detail ? { open: state.detail.card.row } : {};
    const query = params(extra);
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  function say(text) {
    const message = $("message");
    message.textContent = text || "";
    message.hidden = !text;
  }

  function fmt(n) {
    return Number(n).toLocaleString("en-US");
  }

  // a long path by its end, where the file's name is
  function tail(text, room) {
    return text.length <= room ? text : `\u2026${text.slice(text.length - room + 1)}`;
  }

  function score(value) {
    return value === null || value === undefined ? "" : value.toFixed(2);
  }

  // the smallest image size the server makes that fills `pixels` CSS pixels on this screen
  function sizeFor(pixels) {
    const need = pixels * (window.devicePixelRatio || 1);
    return state.info.sizes.find((s) => s >= need) || state.info.sizes[state.info.sizes.length - 1];
  }

  // -- the form and the address ---------------------------------------------------------------------------
  function readAddress() {
    const found = new URLSearchParams(location.search);
    state.query = {};
    for (const name of FILTERS) if (found.get(name)) state.query[name] = found.get(name);
    return found.get("open");
  }

  function fillForm() {
    const form = $("filters");
    for (const name of FILTERS) {
      const field = form.elements[name];
      const value = state.query[name] || (name === "sort" ? "file" : "");
      if (field.tagName === "SELECT" && value && ![...field.options].some((o) => o.value === value)) {
        field.append(el("option", { value }, value)); // a bookmarked value not among the most common
      }
      field.value = value;
    }
  }

  function readForm() {
    const form = $("filters");
    state.query = {};
    for (const name of FILTERS) {
      const value = form.elements[name].value.trim();
      if (value && !(name === "sort" && value === "file")) state.query[name] = value;
    }
  }

  function offer(select, values) {
    for (const { value, count } of values || []) {
      select.append(el("option", { value }, `${value} (${fmt(count)})`));
    }
  }

  // -- the grid -------------------------------------------------------------------------------------------
  async function reload() {
    state.seq += 1;
    state.cards = [];
    state.total = 0;
    state.loading = null;
    $("grid").textContent = "";
    say("");
    writeAddress();
    await loadMore();
    if (!$("export").hidden) refreshExport();
  }

  function loadMore() {
    if (state.loading) return state.loading;
    const seq = state.seq;
    const pending = (async () => {
      try {
        const data = await getJSON(`/api/records?${params({ offset: state.cards.length, limit: PAGE })}`);
        if (seq !== state.seq) return;
        state.total = data.total;
        const grid = $("grid");
        for (const card of data.cards) {
          grid.append(cardView(card, state.cards.length));
          state.cards.push(card);
        }
        showCount(data.records);
      } catch (error) {
        if (seq === state.seq) say(error.message);
      } finally {
        if (state.loading === pending) state.loading = null;
        if (seq === state.seq) document.body.dataset.loaded = String(seq); // for tests and scripts
      }
    })();
    state.loading = pending;
    return pending;
  }

  function showCount(records) {
    const shown = state.cards.length;
    const filtered = state.total === records ? "" : ` (of ${fmt(records)})`;
    $("count").textContent =
      state.total === 0 ? "No record matches these filters." : `${fmt(state.total)} records${filtered}; ${fmt(shown)} loaded`;
    $("more-button").hidden = shown >= state.total;
  }

  function cardView(card, position) {
    const figure = el("figure", {
      class: `card ${card.status === "ok" ? "ok" : "error"}`,
      tabindex: "0",
      "data-row": card.row,
      "data-position": position,
    });
    const frame = el("div", { class: "frame" });
    if (card.width && card.height) {
      const scale = Math.min(FRAME.width / card.width, FRAME.height / card.height);
      frame.append(picture(card, card.width * scale, card.height * scale, false));
    } else {
      frame.append(bareImage(card, FRAME.width, FRAME.height));
    }
    const caption = el("figcaption");
    caption.append(el("div", { class: "path", title: card.path }, tail(card.path, 34)));
    if (card.status === "ok") {
      const text = el("div", { class: "text" });
      text.innerHTML = card.html; // made by the record's task, every record text escaped
      caption.append(text, el("div", { class: "meta" }, summary(card)));
    } else {
      caption.append(el("div", { class: "error-text" }, card.error || "error"));
    }
    figure.append(frame, caption);
    figure.addEventListener("click", () => openAt(Number(figure.dataset.position)));
    return figure;
  }

  function summary(card) {
    const drawn = card.entities.reduce((n, e) => n + e.boxes.length, 0);
    const scores = card.entities.flatMap((e) => e.boxes.map((b) => b[4])).filter((s) => s !== null);
    const boxes = drawn === card.boxes ? `${drawn} box${drawn === 1 ? "" : "es"}` : `${drawn} of ${card.boxes} boxes`;
    return scores.length ? `${boxes}; best ${score(Math.max(...scores))}` : boxes;
  }

  // the image at the record's displayed size (w x h CSS pixels) with its boxes over it, in the record's pixels
  function picture(card, width, height, labelled) {
    const pic = el("div", { class: "pic" });
    pic.style.width = `${width}px`;
    pic.style.height = `${height}px`;
    const img = el("img", {
      src: versioned(`/image/${card.row}?size=${sizeFor(Math.max(width, height))}`),
      alt: card.path,
      loading: labelled ? "eager" : "lazy",
      decoding: "async",
    });
    img.addEventListener("error", () => pic.classList.add("broken"));
    const overlay = svg("svg", { viewBox: `0 0 ${card.width} ${card.height}`, preserveAspectRatio: "none" });
    const palette = state.info.palette;
    const scale = width / card.width;
    for (const entity of card.entities) {
      const colour = palette[entity.color];
      entity.boxes.forEach((box, k) => {
        const [x1, y1, x2, y2] = box;
        const shape = { x: x1, y: y1, width: Math.max(x2 - x1, 0), height: Math.max(y2 - y1, 0) };
        const group = svg("g", { class: "box", "data-e": entity.index, "data-b": k });
        group.append(
          svg("rect", { ...shape, class: "edge", stroke: colour.text }),
          svg("rect", { ...shape, class: "line", stroke: colour.fill }),
        );
        overlay.append(group);
        if (labelled) {
          const label = el("div", { class: `label c${entity.color}`, "data-e": entity.index, "data-b": k });
          label.textContent = `${entity.label} ${score(box[4])}`.trim();
          label.style.left = `${x1 * scale}px`;
          label.style.top = `${y1 * scale}px`;
          pic.append(label);
        }
      });
    }
    pic.prepend(img, overlay);
    return pic;
  }

  // a record without a recorded size (an error record): its image, if it can be shown at all, without boxes
  function bareImage(card, width, height) {
    const pic = el("div", { class: "pic bare" });
    pic.style.width = `${width}px`;
    pic.style.height = `${height}px`;
    const src = versioned(`/image/${card.row}?size=${sizeFor(width)}`);
    const img = el("img", { src, alt: card.path, loading: "lazy" });
    img.addEventListener("error", () => pic.classList.add("broken"));
    pic.append(img);
    return pic;
  }

  // -- the detail view ------------------------------------------------------------------------------------
  async function openAt(position) {
    if (!(position >= 0) || position >= state.total) return;
    while (position >= state.cards.length && state.cards.length < state.total) {
      const before = state.cards.length;
      await loadMore();
      if (state.cards.length === before) return;
    }
    showDetail(state.cards[position], position);
  }

  async function openRow(row) {
    try {
      const data = await getJSON(`/api/record/${encodeURIComponent(row)}?${params()}`);
      if (data.position !== null) return openAt(data.position);
      showDetail(data.card, null, data.record, data.readable); // not among the records the filters keep: shown alone
    } catch (error) {
      say(error.message);
    }
  }

  function showDetail(card, position, record, readable) {
    state.detail = { position, card };
    const detail = $("detail");
    detail.hidden = false;
    document.body.classList.add("detailed");
    $("position").textContent = position === null ? "not in this view" : `${fmt(position + 1)} / ${fmt(state.total)}`;
    $("prev").disabled = position === null || position === 0;
    $("next").disabled = position === null || position + 1 >= state.total;
    $("detail-path").textContent = card.path;
    const text = $("detail-text");
    text.innerHTML = card.html; // made by the record's task, every record text escaped
    $("detail-error").hidden = card.status === "ok";
    $("detail-error").textContent = card.status === "ok" ? "" : card.error || "error";
    drawStage(card);
    const list = $("detail-boxes");
    list.textContent = "";
    for (const entity of card.entities) {
      entity.boxes.forEach((box, k) => {
        const item = el("li", { "data-e": entity.index, "data-b": k });
        item.append(
          el("span", { class: `swatch c${entity.color}` }),
          el("span", { class: "phrase" }, entity.label || "(no phrase)"),
          el("span", { class: "score" }, score(box[4])),
          el("span", { class: "coords" }, box.slice(0, 4).map((v) => Math.round(v * 10) / 10).join(", ")),
        );
        list.append(item);
      });
    }
    if (!list.childElementCount) list.append(el("li", { class: "none" }, "no box shown"));
    $("detail-fields").textContent = "";
    if (record) fields(record, readable);
    else {
      const seq = state.seq;
      getJSON(`/api/record/${card.row}?${params()}`)
        .then((data) => {
          const still = seq === state.seq && state.detail && state.detail.card.row === card.row;
          if (still) fields(data.record, data.readable);
        })
        .catch((error) => say(error.message));
    }
    writeAddress();
    $("close").focus({ preventScroll: true });
  }

  function drawStage(card) {
    const stage = $("stage");
    stage.textContent = "";
    if (!(card.width && card.height)) {
      stage.append(bareImage(card, stage.clientWidth - 32, stage.clientHeight - 32));
      return;
    }
    const scale = Math.min((stage.clientWidth - 32) / card.width, (stage.clientHeight - 32) / card.height);
    stage.append(picture(card, card.width * scale, card.height * scale, true));
  }

  // every field of the record; a field the server also gave readable (file_mtime: a date) shown as that
  function fields(record, readable = {}) {
    const table = $("detail-fields");
    table.textContent = "";
    for (const [name, value] of Object.entries(record)) {
      if (name === "entities" || value === null || value === undefined) continue;
      const raw = typeof value === "object" ? JSON.stringify(value) : String(value);
      const nice = readable && readable[name];
      table.append(el("tr", {}, el("th", {}, name), el("td", nice ? { title: raw } : {}, nice || raw)));
    }
  }

  function closeDetail() {
    const was = state.detail;
    state.detail = null;
    $("detail").hidden = true;
    $("stage").textContent = "";
    document.body.classList.remove("detailed");
    writeAddress();
    if (was && was.position !== null) {
      const card = $("grid").querySelector(`[data-position="${was.position}"]`);
      if (card) card.focus();
    }
  }

  // hovering a phrase lights its boxes; hovering a box (or its line in the list) lights it and its phrase
  function light(target) {
    const detail = $("detail");
    for (const node of detail.querySelectorAll(".lit")) node.classList.remove("lit");
    const owner = target.closest && target.closest("[data-e]");
    detail.classList.toggle("lighting", Boolean(owner));
    if (!owner) return;
    const e = owner.dataset.e;
    const b = owner.dataset.b;
    for (const node of detail.querySelectorAll(`[data-e="${e}"]`)) {
      if (b === undefined || node.dataset.b === undefined || node.dataset.b === b) node.classList.add("lit");
    }
  }

  // -- the export box -------------------------------------------------------------------------------------
  async function refreshExport() {
    try {
      const to = $("export-to").value;
      const data = await getJSON(`/api/export?${params({ to })}`);
      $("export-command").textContent = data.possible ? data.command : "";
      $("export-command").parentElement.hidden = !data.possible;
      $("export-note").textContent = data.note;
      const narrowed = data.possible && !data.exact;
      $("export-shown").hidden = !narrowed;
      $("export-shown-command").textContent = narrowed ? data.shown_command : "";
      $("export-download").href = versioned(`/api/shown.jsonl?${params()}`);
    } catch (error) {
      say(error.message);
    }
  }

  // what the filters offer, once the server has looked at every record
  async function facets() {
    try {
      const found = await getJSON("/api/facets");
      const errors = `${fmt(found.errors)} error${found.errors === 1 ? "" : "s"}`;
      $("task").textContent += `, ${errors}`;
      if (found.scored) document.body.classList.add("scored");
      const form = $("filters");
      offer(form.elements.phrase, found.phrases);
      offer(form.elements.region, found.regions);
      for (const { value } of found.classes || []) $("class-list").append(el("option", { value }));
      for (const name of ["phrase", "region"]) {
        const value = state.query[name] || "";
        const field = form.elements[name];
        if (value && ![...field.options].some((o) => o.value === value)) field.append(el("option", { value }, value));
        field.value = value;
      }
    } catch (error) {
      say(error.message);
    }
  }

  // -- wiring ---------------------------------------------------------------------------------------------
  function onKey(event) {
    const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
    if (state.detail) {
      const at = state.detail.position;
      if (event.key === "Escape") closeDetail();
      else if (event.key === "ArrowRight" && at !== null) openAt(at + 1);
      else if (event.key === "ArrowLeft" && at !== null) openAt(at - 1);
      else return;
      event.preventDefault();
      return;
    }
    if (typing) return;
    const card = event.target.closest && event.target.closest(".card");
    if (!card) return;
    const position = Number(card.dataset.position);
    if (event.key === "Enter") openAt(position);
    else if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
      const next = $("grid").querySelector(`[data-position="${position + (event.key === "ArrowRight" ? 1 : -1)}"]`);
      if (next) next.focus();
      if (event.key === "ArrowRight" && position + 2 >= state.cards.length) loadMore();
    } else return;
    event.preventDefault();
  }

  async function init() {
    const open = readAddress();
    try {
      state.info = await getJSON("/api/info");
    } catch (error) {
      say(error.message);
      return;
    }
    const info = state.info;
    info.palette.forEach((colour, i) => {
      document.documentElement.style.setProperty(`--c${i}`, colour.fill);
      document.documentElement.style.setProperty(`--t${i}`, colour.text);
    });
    document.title = `kosmos view: ${info.name}`;
    $("title").textContent = info.name;
    $("task").textContent = `${info.task}: ${fmt(info.records)} record${info.records === 1 ? "" : "s"}`;
    document.body.classList.add(`task-${info.task}`);
    if (info.detects) document.body.classList.add("detects");
    fillForm();

    let timer = null;
    const form = $("filters");
    form.addEventListener("submit", (event) => event.preventDefault());
    form.addEventListener("input", (event) => {
      if (!TYPED.has(event.target.name)) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        readForm();
        reload();
      }, 300);
    });
    form.addEventListener("change", (event) => {
      clearTimeout(timer);
      readForm();
      reload();
    });
    $("reset").addEventListener("click", () => {
      state.query = {};
      fillForm();
      reload();
    });
    $("export-toggle").addEventListener("click", () => {
      const box = $("export");
      box.hidden = !box.hidden;
      $("export-toggle").setAttribute("aria-expanded", String(!box.hidden));
      if (!box.hidden) refreshExport();
    });
    $("export-to").addEventListener("change", refreshExport);
    for (const button of document.querySelectorAll("[data-copy]")) {
      button.addEventListener("click", () => navigator.clipboard.writeText($(button.dataset.copy).textContent));
    }
    $("more-button").addEventListener("click", () => loadMore());
    new IntersectionObserver((seen) => {
      if (seen.some((s) => s.isIntersecting) && state.cards.length < state.total) loadMore();
    }).observe($("more"));
    $("prev").addEventListener("click", () => state.detail && openAt(state.detail.position - 1));
    $("next").addEventListener("click", () => state.detail && openAt(state.detail.position + 1));
    $("close").addEventListener("click", closeDetail);
    $("detail").addEventListener("mouseover", (event) => light(event.target));
    $("detail").addEventListener("click", (event) => {
      if (event.target.id === "stage") closeDetail();
    });
    document.addEventListener("keydown", onKey);
    window.addEventListener("resize", () => state.detail && drawStage(state.detail.card));

    setInterval(() => getJSON("/api/info").catch(() => {}), 5000); // a changed results file: read again (409)
    await Promise.all([reload(), facets()]);
    if (open !== null) await openRow(open);
    document.body.dataset.ready = "true"; // for tests and scripts: the first page is in
  }

  init();
})();
