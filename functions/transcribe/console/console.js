// infery console: a static page that calls the public API with the key its user pastes. No dependencies, no build.
"use strict";

(() => {
  const KEY_STORAGE = "infery-console-key";
  const SYNC_LIMIT_BYTES = 4 * 1024 * 1024; // MaxSyncAudioBytes: larger files go through an upload and a job
  const FINISHED = new Set(["succeeded", "failed"]);
  const COLORS = ["#1f5fbf", "#d9730d", "#2e8540", "#8e3fb5", "#b3261e", "#0f7b8a", "#6b5b00", "#5a5f6b"];
  // the API lives beside the console: /console -> /v1 locally, /prod/console -> /prod/v1 on API Gateway
  const API = location.origin + location.pathname.replace(/\/console\/?$/, "") + "/v1";

  const $ = (id) => document.getElementById(id);
  const state = { key: null, file: null, fileUrl: null, recorder: null, jobsTimer: null, usage: null };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- the API ---------------------------------------------------------------------------------------------

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.key}`, ...(options.headers || {}) };
    let response;
    try {
      response = await fetch(API + path, { ...options, headers });
    } catch (error) {
      throw new ApiError(0, "network_error", `The API at ${API} cannot be reached (${error.message}).`);
    }
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let code = null;
      try {
        const body = await response.json();
        message = body.error?.message || body.message || message;
        code = body.error?.code || null;
      } catch (_) { /* not JSON: keep the status line */ }
      throw new ApiError(response.status, code, message);
    }
    return response;
  }

  const apiJson = async (path, options) => (await api(path, options)).json();

  function describe(error) {
    if (error instanceof ApiError && error.status) {
      return `${error.status}${error.code ? ` ${error.code}` : ""}: ${error.message}`;
    }
    return error.message || String(error);
  }

  function say(id, text, kind = "") {
    const element = $(id);
    element.textContent = text;
    element.className = `status${kind ? ` ${kind}` : ""}`;
  }

  // --- the key ---------------------------------------------------------------------------------------------

  async function useKey(key) {
    state.key = key;
    say("key-status", "Checking the key…");
    try {
      const usage = await apiJson("/usage?days=30");
      await loadModels(); // before the playground shows: its model list comes from the API
      sessionStorage.setItem(KEY_STORAGE, key);
      $("api-key").value = "";
      $("forget-key").hidden = false;
      $("key-name").textContent = usage.name;
      $("key-id").textContent = usage.key_id;
      setBalance(usage.balance);
      $("key-summary").hidden = false;
      $("main").hidden = false;
      say("key-status", `Using the key ${usage.key_id} (${usage.name}).`, "ok");
      showUsage(usage, 30);
    } catch (error) {
      state.key = null;
      sessionStorage.removeItem(KEY_STORAGE);
      $("key-summary").hidden = true;
      $("main").hidden = true;
      const refused = error instanceof ApiError && error.status === 401;
      say("key-status", refused ? `This key was refused. ${error.message}` : `The key could not be checked: ${describe(error)}`,
        "error");
      $("api-key").focus();
    }
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    state.key = null;
    stopJobsPolling();
    $("key-summary").hidden = true;
    $("main").hidden = true;
    $("forget-key").hidden = true;
    say("key-status", "The key was forgotten by this tab.");
    $("api-key").focus();
  }

  function setBalance(balance) {
    if (balance === null || balance === undefined || balance === "") return;
    $("key-balance").textContent = Number(balance).toLocaleString("en");
    $("usage-balance").textContent = `${Number(balance).toLocaleString("en")} credits`;
  }

  async function loadModels() {
    const models = await apiJson("/models");
    const select = $("model");
    select.replaceChildren(...models.data.map((model) => new Option(model.id, model.id)));
    const preferred = models.data.find((model) => model.id === "whisper-1");
    if (preferred) select.value = preferred.id;
  }

  // --- tabs (WAI-ARIA tabs: arrow keys, Home and End move between them) ---------------------------------------

  const tabs = () => Array.from(document.querySelectorAll('[role="tab"]'));

  function selectTab(tab, focus = true) {
    for (const other of tabs()) {
      const selected = other === tab;
      other.setAttribute("aria-selected", String(selected));
      other.tabIndex = selected ? 0 : -1;
      $(other.getAttribute("aria-controls")).hidden = !selected;
    }
    if (focus) tab.focus();
    stopJobsPolling();
    if (tab.id === "tab-usage") refreshUsage();
    if (tab.id === "tab-jobs") refreshJobs();
  }

  function onTabKey(event) {
    const all = tabs();
    const index = all.indexOf(event.currentTarget);
    const next = { ArrowRight: index + 1, ArrowLeft: index - 1, Home: 0, End: all.length - 1 }[event.key];
    if (next === undefined) return;
    event.preventDefault();
    selectTab(all[(next + all.length) % all.length]);
  }

  // --- playground --------------------------------------------------------------------------------------------

  function setFile(file) {
    state.file = file;
    if (state.fileUrl) URL.revokeObjectURL(state.fileUrl);
    state.fileUrl = URL.createObjectURL(file);
    const route = file.size > SYNC_LIMIT_BYTES ? " (large: it goes through an upload and a job)" : "";
    $("file-info").textContent = `${file.name}, ${formatBytes(file.size)}${route}`;
  }

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} B`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
  }

  async function toggleRecording() {
    const button = $("record");
    if (state.recorder) {
      state.recorder.stop();
      return;
    }
    if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
      say("playground-status", "This browser cannot record here (it needs a secure page: https or localhost).", "error");
      return;
    }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
      const recorder = new MediaRecorder(stream);
      const chunks = [];
      recorder.ondataavailable = (event) => chunks.push(event.data);
      recorder.onstop = () => {
        stream.getTracks().forEach((track) => track.stop());
        state.recorder = null;
        button.textContent = "Record";
        button.setAttribute("aria-pressed", "false");
        const type = recorder.mimeType || "audio/webm";
        const extension = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
        setFile(new File(chunks, `recording.${extension}`, { type }));
        say("playground-status", "Recorded. Transcribe it when you are ready.", "ok");
      };
      recorder.start();
      state.recorder = recorder;
      button.textContent = "Stop recording";
      button.setAttribute("aria-pressed", "true");
      say("playground-status", "Recording… select Stop recording to finish.");
    } catch (error) {
      say("playground-status", `The microphone is not available: ${error.message}`, "error");
    }
  }

  function options() {
    const format = $("format").value;
    return {
      model: $("model").value || "whisper-1",
      response_format: format,
      language: $("language").value,
      words: format === "verbose_json" && $("word-timestamps").checked,
    };
  }

  async function transcribe(event) {
    event.preventDefault();
    if (!state.file) {
      say("playground-status", "Choose, drop or record an audio file first.", "error");
      $("audio-file").focus();
      return;
    }
    const button = $("transcribe");
    button.disabled = true;
    $("result").hidden = true;
    const chosen = options();
    try {
      const asJob = $("as-job").checked || state.file.size > SYNC_LIMIT_BYTES;
      const outcome = asJob ? await transcribeAsJob(state.file, chosen) : await transcribeNow(state.file, chosen);
      showTranscript(outcome, chosen);
      say("playground-status", `Done: ${outcome.creditsUsed} credit${outcome.creditsUsed === "1" ? "" : "s"} used.`,
        "ok");
    } catch (error) {
      say("playground-status", `The transcription failed. ${describe(error)}`, "error");
    } finally {
      button.disabled = false;
    }
  }

  async function transcribeNow(file, chosen) {
    $("progress").hidden = true;
    say("playground-status", "Transcribing…");
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", chosen.model);
    form.append("response_format", chosen.response_format);
    if (chosen.language) form.append("language", chosen.language);
    if (chosen.words) {
      form.append("timestamp_granularities[]", "word");
      form.append("timestamp_granularities[]", "segment");
    }
    const response = await api("/audio/transcriptions", { method: "POST", body: form });
    setBalance(response.headers.get("x-infery-credits-balance"));
    return { body: await response.text(), creditsUsed: response.headers.get("x-infery-credits-used") || "0" };
  }

  async function transcribeAsJob(file, chosen) {
    $("progress").hidden = false;
    $("upload-progress").value = 0;
    $("job-progress").value = 0;
    say("playground-status", "Uploading…");
    const request = { filename: file.name, model: chosen.model, response_format: chosen.response_format };
    if (chosen.language) request.language = chosen.language;
    if (chosen.words) request.timestamp_granularities = ["word", "segment"];
    const upload = await apiJson("/uploads", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(request),
    });
    if (file.size > upload.max_bytes) {
      throw new Error(`The file is ${formatBytes(file.size)}; this deployment takes up to ${formatBytes(upload.max_bytes)}.`);
    }
    await postForm(upload, file);
    $("upload-progress").value = 100;
    say("playground-status", "Uploaded. Transcribing…");
    let job;
    for (;;) {
      job = await apiJson(`/jobs/${encodeURIComponent(upload.job_id)}`);
      $("job-progress").value = Math.round((job.progress || 0) * 100);
      say("playground-status", `Job ${job.status}, ${Math.round((job.progress || 0) * 100)}%…`);
      if (FINISHED.has(job.status)) break;
      await new Promise((resolve) => setTimeout(resolve, 1000));
    }
    if (job.status !== "succeeded") {
      throw new Error(`The job failed: ${job.error?.message || "no reason given"}`);
    }
    const result = await api(`/jobs/${encodeURIComponent(job.id)}/result`);
    setBalance(result.headers.get("x-infery-credits-balance"));
    return { body: await result.text(), creditsUsed: result.headers.get("x-infery-credits-used") || "0", job };
  }

  // the presigned POST: every field, then the file, last; XMLHttpRequest because fetch reports no upload progress
  function postForm(upload, file) {
    return new Promise((resolve, reject) => {
      const form = new FormData();
      for (const [name, value] of Object.entries(upload.fields)) form.append(name, value);
      form.append("file", file, file.name);
      const request = new XMLHttpRequest();
      request.open("POST", upload.upload_url);
      request.upload.onprogress = (event) => {
        if (event.lengthComputable) $("upload-progress").value = Math.round((event.loaded / event.total) * 100);
      };
      request.onload = () => (request.status < 300 ? resolve()
        : reject(new Error(`The upload was refused (${request.status}).`)));
      request.onerror = () => reject(new Error("The upload failed: the storage did not answer, or refused this page."));
      request.send(form);
    });
  }

  function clock(seconds) {
    const minutes = Math.floor(seconds / 60);
    return `${minutes}:${(seconds - minutes * 60).toFixed(2).padStart(5, "0")}`;
  }

  function showTranscript(outcome, chosen) {
    const player = $("player");
    player.src = state.fileUrl;
    const segments = $("segments");
    const text = $("transcript-text");
    segments.replaceChildren();
    let parsed = null;
    if (chosen.response_format === "verbose_json" || chosen.response_format === "json") {
      try { parsed = JSON.parse(outcome.body); } catch (_) { parsed = null; }
    }
    if (parsed && Array.isArray(parsed.segments)) {
      renderSegments(parsed);
      text.hidden = true;
      const duration = parsed.duration ? `, ${parsed.duration.toFixed(1)} s of audio` : "";
      $("result-meta").textContent = `Language ${parsed.language}${duration}, ${outcome.creditsUsed} credits.`;
    } else {
      text.textContent = parsed ? parsed.text : outcome.body;
      text.hidden = false;
      $("words-help").hidden = true;
      $("result-meta").textContent = `${outcome.creditsUsed} credits.`;
    }
    $("result").hidden = false;
  }

  function renderSegments(transcript) {
    const words = Array.isArray(transcript.words) ? transcript.words : [];
    // each word goes with the last segment that starts before it (none is lost at a segment's edge)
    const perSegment = transcript.segments.map(() => []);
    for (const word of words) {
      let index = 0;
      transcript.segments.forEach((segment, candidate) => { if (segment.start <= word.start + 0.01) index = candidate; });
      if (perSegment.length) perSegment[index].push(word);
    }
    const items = transcript.segments.map((segment, segmentIndex) => {
      const item = document.createElement("li");
      const time = document.createElement("span");
      time.className = "time";
      time.textContent = `${clock(segment.start)}–${clock(segment.end)}`;
      const line = document.createElement("div");
      line.className = "words";
      const own = perSegment[segmentIndex];
      if (own.length) {
        for (const word of own) line.append(wordButton(word));
      } else {
        line.textContent = segment.text.trim();
      }
      item.append(time, line);
      return item;
    });
    $("segments").replaceChildren(...items);
    $("words-help").hidden = words.length === 0;
  }

  function wordButton(word) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "word";
    button.textContent = word.word.trim();
    button.dataset.start = String(word.start);
    button.dataset.end = String(word.end);
    button.title = `${clock(word.start)}–${clock(word.end)}`;
    button.setAttribute("aria-label", `${word.word.trim()}, at ${clock(word.start)}: play from here`);
    button.addEventListener("click", () => playFrom(word.start, button));
    return button;
  }

  function playFrom(seconds, button) {
    const player = $("player");
    document.querySelectorAll("button.word.current").forEach((other) => other.classList.remove("current"));
    button.classList.add("current");
    const start = () => {
      player.currentTime = seconds;
      player.play().catch(() => { /* autoplay refused: the position is set, the user presses play */ });
    };
    if (player.readyState >= 1) start();
    else player.addEventListener("loadedmetadata", start, { once: true });
  }

  // --- usage -------------------------------------------------------------------------------------------------

  async function refreshUsage() {
    if (!state.key) return;
    const days = Number($("usage-days").value);
    say("usage-status", "Loading…");
    try {
      showUsage(await apiJson(`/usage?days=${days}`), days);
      say("usage-status", "");
    } catch (error) {
      say("usage-status", `The usage could not be read. ${describe(error)}`, "error");
    }
  }

  function showUsage(usage, days) {
    state.usage = usage;
    setBalance(usage.balance);
    $("usage-credits").textContent = usage.total.credits.toLocaleString("en");
    $("usage-requests").textContent = usage.total.requests.toLocaleString("en");
    $("usage-audio").textContent = `${(usage.total.audio_seconds / 60).toFixed(1)} min`;
    $("usage-added").textContent = usage.credits_added.toLocaleString("en");
    drawChart(usage, days);
    fillRows($("usage-by-day"), (usage.by_day_and_model || []).map((row) => [
      row.date, row.model, number(row.requests), number(row.audio_seconds.toFixed(1)), number(row.credits)]));
    fillRows($("recent-requests"), usage.recent_requests.map((request) => [
      localTime(request.created_at), code(request.request_id), request.model || "–", request.status,
      number(request.audio_seconds === null ? "–" : request.audio_seconds.toFixed(1)), number(request.credits)]));
  }

  const number = (value) => ({ number: String(value) });
  const code = (value) => ({ code: value });

  function fillRows(table, rows) {
    const body = table.tBodies[0];
    body.replaceChildren(...rows.map((cells) => {
      const row = document.createElement("tr");
      for (const cell of cells) {
        const td = document.createElement("td");
        if (cell && typeof cell === "object" && "number" in cell) {
          td.className = "number";
          td.textContent = cell.number;
        } else if (cell && typeof cell === "object" && "code" in cell) {
          const element = document.createElement("code");
          element.textContent = cell.code;
          td.append(element);
        } else if (cell instanceof Node) {
          td.append(cell);
        } else {
          td.textContent = cell;
        }
        row.append(td);
      }
      return row;
    }));
    if (!rows.length) {
      const row = document.createElement("tr");
      const td = document.createElement("td");
      td.colSpan = table.tHead.rows[0].cells.length;
      td.textContent = "Nothing in this period.";
      row.append(td);
      body.append(row);
    }
  }

  function localTime(iso) {
    const moment = new Date(iso);
    return Number.isNaN(moment.getTime()) ? iso : moment.toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" });
  }

  const SVG = "http://www.w3.org/2000/svg";

  function svg(name, attributes = {}, text = null) {
    const element = document.createElementNS(SVG, name);
    for (const [attribute, value] of Object.entries(attributes)) element.setAttribute(attribute, String(value));
    if (text !== null) element.textContent = text;
    return element;
  }

  function utcDays(usage, days) {
    const end = new Date(usage.period.end);
    const list = [];
    for (let offset = Math.min(days, 366) - 1; offset >= 0; offset -= 1) {
      list.push(new Date(end.getTime() - offset * 86400000).toISOString().slice(0, 10));
    }
    return list;
  }

  // a stacked bar per day (UTC), a colour per model; the numbers are also in the table below the chart
  function drawChart(usage, days) {
    const rows = usage.by_day_and_model || [];
    const models = [...new Set(rows.map((row) => row.model))].sort();
    const colour = (model) => COLORS[models.indexOf(model) % COLORS.length];
    const dates = utcDays(usage, days);
    const perDay = new Map(dates.map((date) => [date, []]));
    for (const row of rows) if (perDay.has(row.date)) perDay.get(row.date).push(row);
    const highest = Math.max(1, ...[...perDay.values()].map((list) => list.reduce((sum, row) => sum + row.credits, 0)));
    const step = niceStep(highest);
    const top = Math.ceil(highest / step) * step;
    const width = 760;
    const height = 260;
    const left = 48;
    const bottom = 32;
    const plotWidth = width - left - 12;
    const plotHeight = height - bottom - 12;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, role: "img", "aria-labelledby": "chart-title chart-desc",
      id: "usage-svg",
    });
    const total = usage.total.credits;
    chart.append(svg("title", { id: "chart-title" }, `Credits per day, by model, over the last ${days} days`));
    chart.append(svg("desc", { id: "chart-desc" }, total
      ? `${total} credits in all: ${usage.by_model.map((m) => `${m.model} ${m.credits}`).join(", ")}.`
      : "No credits were used in this period."));
    for (let value = 0; value <= top; value += step) {
      const y = 12 + plotHeight - (value / top) * plotHeight;
      chart.append(svg("line", { class: "grid", x1: left, x2: width - 12, y1: y, y2: y }));
      chart.append(svg("text", { x: left - 6, y: y + 4, "text-anchor": "end" }, String(value)));
    }
    chart.append(svg("line", { class: "axis", x1: left, x2: width - 12, y1: 12 + plotHeight, y2: 12 + plotHeight }));
    const slot = plotWidth / dates.length;
    const barWidth = Math.max(1, Math.min(28, slot * 0.7));
    const labelEvery = Math.ceil(dates.length / 10);
    dates.forEach((date, index) => {
      const x = left + index * slot + (slot - barWidth) / 2;
      let y = 12 + plotHeight;
      for (const row of perDay.get(date)) {
        const barHeight = (row.credits / top) * plotHeight;
        y -= barHeight;
        const bar = svg("rect", { x, y, width: barWidth, height: Math.max(barHeight, 0.5), fill: colour(row.model),
          class: "bar", "data-date": date, "data-model": row.model, "data-credits": row.credits });
        bar.append(svg("title", {}, `${date}, ${row.model}: ${row.credits} credits, ${row.requests} requests`));
        chart.append(bar);
      }
      if ((dates.length - 1 - index) % labelEvery === 0) {
        chart.append(svg("text", { x: left + index * slot + slot / 2, y: height - 12, "text-anchor": "middle" },
          date.slice(5)));
      }
    });
    if (!total) {
      chart.append(svg("text", { class: "empty", x: left + plotWidth / 2, y: 12 + plotHeight / 2,
        "text-anchor": "middle" }, "No credits used in this period"));
    }
    $("usage-chart").replaceChildren(chart);
    $("chart-legend").replaceChildren(...models.map((model) => {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colour(model);
      item.append(swatch, document.createTextNode(model));
      return item;
    }));
  }

  function niceStep(highest) {
    const rough = highest / 4;
    const power = 10 ** Math.floor(Math.log10(Math.max(rough, 1)));
    const step = [1, 2, 5, 10].map((factor) => factor * power).find((candidate) => candidate >= rough);
    return Math.max(1, step);
  }

  async function downloadCsv() {
    const days = Number($("usage-days").value);
    try {
      const response = await api(`/usage?days=${days}&format=csv`);
      const blob = await response.blob();
      const link = document.createElement("a");
      link.href = URL.createObjectURL(blob);
      link.download = `infery-usage-${$("key-id").textContent}-${days}d.csv`;
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      say("usage-status", `Downloaded ${link.download}.`, "ok");
    } catch (error) {
      say("usage-status", `The CSV could not be downloaded. ${describe(error)}`, "error");
    }
  }

  // --- jobs --------------------------------------------------------------------------------------------------

  function stopJobsPolling() {
    clearTimeout(state.jobsTimer);
    state.jobsTimer = null;
  }

  async function refreshJobs() {
    if (!state.key) return;
    stopJobsPolling();
    try {
      const listing = await apiJson("/jobs?limit=50");
      fillRows($("jobs-table"), listing.data.map((job) => [
        localTime(job.created_at), job.filename || code(job.id), job.status, progressBar(job),
        number(job.credits_used ?? "–"), resultButton(job)]));
      const count = listing.data.length;
      say("jobs-status", count ? `${count} job${count === 1 ? "" : "s"} of this key, newest first${
        listing.has_more ? " (older ones are not shown)" : ""}.`
        : "This key has no jobs yet: send a file as a job in the playground.");
      if (listing.data.some((job) => !FINISHED.has(job.status)) && !$("panel-jobs").hidden) {
        state.jobsTimer = setTimeout(refreshJobs, 2000);
      }
    } catch (error) {
      say("jobs-status", `The jobs could not be read. ${describe(error)}`, "error");
    }
  }

  function progressBar(job) {
    const bar = document.createElement("progress");
    bar.max = 100;
    bar.value = Math.round((job.progress || 0) * 100);
    bar.setAttribute("aria-label", `${job.filename || job.id}: ${bar.value}%`);
    return bar;
  }

  function resultButton(job) {
    if (job.status === "failed") return job.error?.message || "failed";
    if (job.status !== "succeeded") return "–";
    const button = document.createElement("button");
    button.type = "button";
    button.className = "secondary";
    button.textContent = "Show transcript";
    button.setAttribute("aria-label", `Show the transcript of ${job.filename || job.id}`);
    button.addEventListener("click", () => showJobResult(job));
    return button;
  }

  async function showJobResult(job) {
    try {
      const response = await api(`/jobs/${encodeURIComponent(job.id)}/result?response_format=text`);
      $("job-result-heading").textContent = `Transcript of ${job.filename || job.id}`;
      $("job-result-text").textContent = await response.text();
      $("job-result").hidden = false;
      $("job-result-text").focus();
    } catch (error) {
      say("jobs-status", `The transcript could not be read. ${describe(error)}`, "error");
    }
  }

  // --- wiring ------------------------------------------------------------------------------------------------

  function wire() {
    $("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      if (!key) {
        say("key-status", "Paste an API key (inf_...) first.", "error");
        $("api-key").focus();
        return;
      }
      useKey(key);
    });
    $("forget-key").addEventListener("click", forgetKey);
    for (const tab of tabs()) {
      tab.addEventListener("click", () => selectTab(tab));
      tab.addEventListener("keydown", onTabKey);
    }
    $("audio-file").addEventListener("change", (event) => {
      if (event.target.files.length) setFile(event.target.files[0]);
    });
    const zone = $("drop-zone");
    zone.addEventListener("dragover", (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    });
    zone.addEventListener("dragleave", () => zone.classList.remove("dragging"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("dragging");
      if (event.dataTransfer.files.length) setFile(event.dataTransfer.files[0]);
    });
    $("record").addEventListener("click", toggleRecording);
    $("format").addEventListener("change", () => {
      $("word-timestamps").disabled = $("format").value !== "verbose_json";
    });
    $("transcribe-form").addEventListener("submit", transcribe);
    $("usage-days").addEventListener("change", refreshUsage);
    $("usage-refresh").addEventListener("click", refreshUsage);
    $("usage-csv").addEventListener("click", downloadCsv);
    $("jobs-refresh").addEventListener("click", refreshJobs);
    $("job-result-text").tabIndex = -1;

    const saved = sessionStorage.getItem(KEY_STORAGE);
    if (saved) useKey(saved);
  }

  wire();
})();
