/*
 * The Loss Explorer's interactive core, a Streamlit custom component (components.v1 protocol, written
 * by hand: the page posts "streamlit:render" with the arguments; this frame answers with
 * "streamlit:componentReady", "streamlit:setFrameHeight" and "streamlit:setComponentValue").
 *
 * While a control moves, every view redraws here, once per animation frame, from RobustLossMath (the
 * library's forms, log Z from the server's table): no server round trip per frame. When a control
 * settles (a drag ends, a key is pressed, a preset or a switch is clicked) the state goes to the server
 * with a fresh event id, for what the server draws itself. The server's copy comes back as `view`;
 * this frame takes it only at its first render and when the server says it changed the state itself
 * (`push` changes, e.g. "Show the fitted loss above"), so a rerun never pulls a slider back mid-drag.
 */
(function () {
  "use strict";

  const M = window.RobustLossMath;
  const { LineChart } = window.LossCharts;

  const CASE_COLORS = {
    welsch: "#9467bd", geman_mcclure: "#d62728", cauchy: "#2ca02c", charbonnier: "#ff7f0e", l2: "#1f77b4",
  };
  const CHOSEN_COLOR = "#111827";
  const T_COLOR = "#c2410c";
  // Light to dark as α grows, so the trade-off chart reads as one ordered family.
  const TRADEOFF_COLORS = ["#e8c81a", "#7ad151", "#22a884", "#2a788e", "#414487", "#440154"];
  const QUANTITIES = {
    rho: { label: "ρ", title: "Loss ρ(x, α, c)", fn: M.rho },
    psi: { label: "ψ", title: "Derivative ψ(x, α, c)", fn: M.psi },
    weight: { label: "ψ/x", title: "Weight ψ(x)/x", fn: M.weight },
  };

  const $ = (id) => document.getElementById(id);
  // DOM writes only where the text changed: every write invalidates the frame's style and layout.
  const setText = (element, text) => {
    if (element.textContent !== text) element.textContent = text;
  };
  const setAttr = (element, name, value) => {
    if (element.getAttribute(name) !== value) element.setAttribute(name, value);
  };
  const setHidden = (element, hidden) => {
    if (element.hidden !== hidden) element.hidden = hidden;
  };
  const controls = {
    alpha: $("alpha"), scale: $("scale"), range: $("range"), nu: $("nu"),
    fitNamed: $("fit-named"), logY: $("log-y"), showT: $("show-t"),
  };
  const charts = {};
  for (const canvas of document.querySelectorAll("canvas[data-chart]")) {
    charts[canvas.dataset.chart] = new LineChart(canvas);
  }

  let tables = null; // slider stops, cases, log Z table, t constants, sentences (core.explorer.browser_tables)
  let state = null; // {alpha, scale, half_width, fit_named, log_y, show_t, nu}
  let lastPush = null;
  let built = false;
  let frameRequested = false;
  let hover = null; // {chart, x}
  let lastHeight = 0;
  let colors = { text: "#31333f", grid: "rgba(49,51,63,0.1)", axis: "rgba(49,51,63,0.45)" };
  let font = "sans-serif";
  const mountId = Math.random().toString(36).slice(2, 10);
  let sequence = 0;
  const cache = new Map(); // curves that do not depend on α, by (c, x range[, ν])

  function post(type, data) {
    window.parent.postMessage({ isStreamlitMessage: true, type, ...data }, "*");
  }

  // The settled state to the server, with an event id it has not seen.
  function report() {
    sequence += 1;
    const value = { ...state, alpha: M.alphaToJson(state.alpha), event: `${mountId}:${sequence}` };
    post("streamlit:setComponentValue", { value, dataType: "json" });
  }

  function nearestIndex(options, value, logScale) {
    let best = 0;
    let bestGap = Infinity;
    options.forEach((option, i) => {
      const gap = option === value ? -1 : logScale ? Math.abs(Math.log(option / value)) : Math.abs(option - value);
      if (gap < bestGap) {
        bestGap = gap;
        best = i;
      }
    });
    return best;
  }

  function decodeState(view) {
    return { ...view, alpha: M.alphaFromJson(view.alpha) };
  }

  // ---------------------------------------------------------------------------------------------
  // Controls

  function build() {
    controls.alpha.max = String(tables.alphaOptions.length - 1);
    controls.scale.max = String(tables.scale_options.length - 1);
    controls.range.max = String(tables.half_width_options.length - 1);
    controls.nu.max = String(tables.nu_options.length - 1);
    const buttons = $("preset-buttons");
    for (const c of tables.cases) {
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.case = c.key;
      button.textContent = `${c.name} ${M.alphaLabel(c.alpha)}`;
      button.addEventListener("click", () => {
        state.alpha = c.alpha;
        syncControls();
        requestDraw();
        report();
      });
      buttons.appendChild(button);
    }
    const slide = (input, apply) => {
      input.addEventListener("input", () => {
        apply(Number(input.value));
        updateOutputs();
        requestDraw();
      });
      input.addEventListener("change", report);
    };
    slide(controls.alpha, (i) => { state.alpha = tables.alphaOptions[i]; });
    slide(controls.scale, (i) => { state.scale = tables.scale_options[i]; });
    slide(controls.range, (i) => { state.half_width = tables.half_width_options[i]; });
    slide(controls.nu, (i) => { state.nu = tables.nu_options[i]; });
    const toggle = (input, key) => {
      input.addEventListener("change", () => {
        state[key] = input.checked;
        updateOutputs();
        requestDraw();
        report();
      });
    };
    toggle(controls.fitNamed, "fit_named");
    toggle(controls.logY, "log_y");
    toggle(controls.showT, "show_t");
    for (const [key, chart] of Object.entries(charts)) {
      const canvas = chart.canvas;
      canvas.addEventListener("pointermove", (event) => {
        if (!chart.mapping) return;
        const rect = canvas.getBoundingClientRect();
        const x = chart.mapping.xFromPixel(event.clientX - rect.left);
        hover = Math.abs(x) <= state.half_width ? { chart: key, x } : null;
        requestDraw();
      });
      canvas.addEventListener("pointerleave", () => {
        hover = null;
        requestDraw();
      });
    }
    new ResizeObserver(() => {
      requestDraw();
      reportHeight();
    }).observe(document.body);
    built = true;
  }

  function syncControls() {
    controls.alpha.value = String(nearestIndex(tables.alphaOptions, state.alpha, false));
    controls.scale.value = String(nearestIndex(tables.scale_options, state.scale, true));
    controls.range.value = String(nearestIndex(tables.half_width_options, state.half_width, true));
    controls.nu.value = String(nearestIndex(tables.nu_options, state.nu, true));
    controls.fitNamed.checked = state.fit_named;
    controls.logY.checked = state.log_y;
    controls.showT.checked = state.show_t;
    updateOutputs();
  }

  function updateOutputs() {
    const alphaText = M.alphaLabel(state.alpha);
    setText($("alpha-out"), alphaText);
    setAttr(controls.alpha, "aria-valuetext", alphaText);
    setText($("scale-out"), M.numberLabel(state.scale));
    setAttr(controls.scale, "aria-valuetext", M.numberLabel(state.scale));
    setText($("range-out"), M.numberLabel(state.half_width));
    setAttr(controls.range, "aria-valuetext", M.numberLabel(state.half_width));
    setText($("nu-out"), M.numberLabel(state.nu));
    setAttr(controls.nu, "aria-valuetext", M.numberLabel(state.nu));
    setAttr($("nu-control"), "aria-disabled", String(!state.show_t));
    for (const button of document.querySelectorAll("#preset-buttons button")) {
      const c = tables.cases.find((item) => item.key === button.dataset.case);
      setAttr(button, "aria-pressed", String(c.alpha === state.alpha));
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Curves

  function grid(halfWidth) {
    const n = tables.grid_points;
    const x = new Float64Array(n);
    for (let i = 0; i < n; i++) x[i] = -halfWidth + (2 * halfWidth * i) / (n - 1);
    x[(n - 1) / 2] = 0;
    return x;
  }

  function curve(x, f) {
    const y = new Float64Array(x.length);
    for (let i = 0; i < x.length; i++) y[i] = f(x[i]);
    return y;
  }

  // ρ, ψ, ψ/x and (α ≥ 0) −log p and p of one α at this c on the grid x.
  function curves(x, alpha, c) {
    const out = {
      rho: curve(x, (v) => M.rho(v, alpha, c)),
      psi: curve(x, (v) => M.psi(v, alpha, c)),
      weight: curve(x, (v) => M.weight(v, alpha, c)),
      nll: null,
      density: null,
      logZ: alpha >= 0 ? M.logZ(alpha, tables.log_z) : NaN,
    };
    if (alpha >= 0) {
      const offset = Math.log(c) + out.logZ;
      out.nll = out.rho.map((r) => r + offset);
      out.density = out.nll.map((v) => Math.exp(-v));
    }
    return out;
  }

  function cached(key, make) {
    if (!cache.has(key)) {
      if (cache.size > 32) cache.clear();
      cache.set(key, make());
    }
    return cache.get(key);
  }

  function tCurves(x, c, nu) {
    const i = tables.nu_options.indexOf(nu);
    const s = M.studentsTScale(c, nu);
    const nll = curve(x, (v) => M.studentsTNll(v, nu, s, tables.t_constants[i]));
    return { nll, density: nll.map((v) => Math.exp(-v)) };
  }

  // ---------------------------------------------------------------------------------------------
  // Drawing

  function requestDraw() {
    if (!frameRequested && built) {
      frameRequested = true;
      requestAnimationFrame(draw);
    }
  }

  function legendItem(color, text, { width = 2, opacity = 1, dash = false } = {}) {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.borderTopColor = color;
    swatch.style.borderTopWidth = `${width}px`;
    swatch.style.borderTopStyle = dash ? "dashed" : "solid";
    swatch.style.opacity = String(opacity);
    item.append(swatch, text);
    return item;
  }

  function setLegend(element, items) {
    const signature = JSON.stringify(items);
    if (element.dataset.signature === signature) return;
    element.dataset.signature = signature;
    element.replaceChildren(...items.map(([color, text, style]) => legendItem(color, text, style)));
  }

  function formatValue(v) {
    if (!Number.isFinite(v)) return v > 0 ? "∞" : "—";
    const a = Math.abs(v);
    if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(2).replace("-", "−");
    return String(Number(v.toPrecision(4))).replace("-", "−");
  }

  function draw() {
    frameRequested = false;
    const { alpha, scale: c, half_width: halfWidth, fit_named: fitNamed, log_y: logY } = state;
    const x = cached(`x|${halfWidth}`, () => grid(halfWidth));
    const refs = cached(`refs|${c}|${halfWidth}`, () => tables.cases.map((k) => {
      const r = { ...k, ...curves(x, k.alpha, c) };
      r.peak = r.rho.reduce((m, v) => (Number.isFinite(v) && v > m ? v : m), -Infinity);
      return r;
    }));
    const tradeoff = cached(`tradeoff|${c}|${halfWidth}`, () =>
      tables.tradeoff_alphas.map((a) => ({ alpha: a, nll: curves(x, a, c).nll })));
    const chosen = curves(x, alpha, c);
    const showT = state.show_t && alpha >= 0;
    const t = state.show_t ? cached(`t|${c}|${halfWidth}|${state.nu}`, () => tCurves(x, c, state.nu)) : null;
    const alphaText = M.alphaLabel(alpha);
    const cText = M.numberLabel(c);
    const named = tables.cases.find((k) => k.alpha === alpha);
    const caseName = named ? named.name : alpha === Infinity ? tables.plus_inf_name : "general α";

    // headline
    setText($("heading"), `α = ${alphaText}, c = ${cText} · ${caseName}`);
    setText($("describe"), M.describe(alpha, tables.descriptions));
    setText($("metric-alpha"), alphaText);
    setText($("metric-scale"), cText);
    setText($("metric-logz"), alpha >= 0 ? M.fixed(chosen.logZ, 5) : "—");
    const limit = M.rhoLimit(alpha);
    setText($("metric-limit"), limit === Infinity ? "∞" : String(Number(limit.toPrecision(4))));

    const legend = tables.cases.map((k) => [CASE_COLORS[k.key], `${k.name} ${M.alphaLabel(k.alpha)}`, { opacity: 0.6 }]);
    legend.push([CHOSEN_COLOR, `α = ${alphaText}`, { width: 3 }]);
    if (state.show_t) legend.push([T_COLOR, `Student's t, ν = ${M.numberLabel(state.nu)} (−log p and p)`, { dash: true }]);
    setLegend($("legend"), legend);

    const base = { x, xRange: [-halfWidth, halfWidth], logY, xLabel: "x", colors, font };
    const faint = (k, y) => ({ y, color: CASE_COLORS[k.key], width: 1.5, opacity: 0.45 });
    const bold = (y) => ({ y, color: CHOSEN_COLOR, width: 3 });
    const marker = (key, y) => {
      if (!hover || hover.chart !== key) return null;
      const i = Math.round(((hover.x + halfWidth) / (2 * halfWidth)) * (x.length - 1));
      return { x: x[i], y: y[i], color: CHOSEN_COLOR, i };
    };
    const paint = (key, spec, y, label) => {
      const m = y ? marker(key, y) : null;
      charts[key].mapping = charts[key].draw({ ...base, ...spec, marker: m });
      const readout = charts[key].canvas.parentElement.querySelector(".readout");
      setText(readout, m ? `x = ${formatValue(m.x)} · ${label} = ${formatValue(m.y)}` : "");
    };

    for (const key of ["rho", "psi", "weight"]) {
      const q = QUANTITIES[key];
      const refValues = refs.map((r) => r[key]);
      paint(key, {
        yLabel: q.label,
        series: [...refs.map((r) => faint(r, r[key])), bold(chosen[key])],
        rangeFrom: fitNamed ? refValues : [...refValues, chosen[key]],
      }, chosen[key], q.label);
      setAttr(charts[key].canvas, "aria-label",
        `${q.title} for α = ${alphaText}, c = ${cText}, x from −${M.numberLabel(halfWidth)} to ${M.numberLabel(halfWidth)}, over the named cases`);
    }

    const densityRefs = refs.filter((r) => r.nll);
    setHidden($("panel-nll"), alpha < 0);
    setHidden($("panel-density"), alpha < 0);
    setHidden($("no-density"), alpha >= 0);
    if (alpha < 0) {
      setText($("no-density"),
        `No likelihood at α = ${alphaText}: Z(α) = ∫ exp(−ρ) dx is infinite for α < 0, so ρ has no ` +
        "normalised density and cannot be learned as an NLL. Pick α ≥ 0 to see −log p and p.");
    } else {
      for (const key of ["nll", "density"]) {
        // the t goes over the chosen curve: near ν ≈ 3 and α ≈ 1 they all but coincide
        const extra = showT ? [{ y: t[key], color: T_COLOR, width: 2, dash: [6, 4] }] : [];
        const refValues = densityRefs.map((r) => r[key]);
        paint(key, {
          yLabel: key === "nll" ? "NLL" : "p",
          series: [...densityRefs.map((r) => faint(r, r[key])), bold(chosen[key]), ...extra],
          // the density is bounded, so its axis always fits every curve
          rangeFrom: fitNamed && key === "nll" ? refValues : [...refValues, chosen[key], ...(showT ? [t[key]] : [])],
        }, chosen[key], key === "nll" ? "−log p" : "p");
        setAttr(charts[key].canvas, "aria-label",
          `${key === "nll" ? "−log p(x | α, c)" : "Density p(x | α, c)"} for α = ${alphaText}, c = ${cText}` +
          (showT ? `, with Student's t at ν = ${M.numberLabel(state.nu)}` : ""));
      }
    }

    // the trade-off: the axis fits α ≤ 2, where the trade is; steeper members may leave the top
    const tradeSeries = tradeoff.map((r, i) => ({ y: r.nll, color: TRADEOFF_COLORS[i], width: 2 }));
    const chosenInTrade = alpha >= 0 && !tables.tradeoff_alphas.includes(alpha);
    if (chosenInTrade) tradeSeries.push({ y: chosen.nll, color: CHOSEN_COLOR, width: 3, dash: [7, 4] });
    const gentle = tradeoff.filter((r) => r.alpha <= 2).map((r) => r.nll);
    paint("tradeoff", {
      yLabel: "NLL",
      series: tradeSeries,
      rangeFrom: fitNamed ? gentle : tradeSeries.map((s) => s.y),
    }, alpha >= 0 ? chosen.nll : null, "−log p");
    const tradeLegend = tradeoff.map((r, i) => [TRADEOFF_COLORS[i], M.alphaLabel(r.alpha), {}]);
    if (chosenInTrade) tradeLegend.push([CHOSEN_COLOR, alphaText, { width: 3, dash: true }]);
    setLegend($("tradeoff-legend"), tradeLegend);
    setAttr(charts.tradeoff.canvas, "aria-label", `Trade-off at c = ${cText}: −log p for α = ` +
      tables.tradeoff_alphas.map(M.alphaLabel).join(", "));

    // a reference that outgrows the others by orders of magnitude flattens them: say what helps
    const peaks = [...refs].sort((a, b) => b.peak - a.peak);
    const flattening = fitNamed && !logY && peaks[0].peak > 100 * peaks[2].peak;
    setHidden($("hint"), !flattening);
    if (flattening) {
      const peak = peaks[0].peak.toLocaleString("en-US", { maximumSignificantDigits: 3 });
      setText($("hint"), `${peaks[0].name} reaches ${peak} on this x range and flattens the ` +
        "other curves: turn on “Log y axis”, or narrow the x range.");
    }
    setAttr($("explorer"), "aria-busy", "false");
    reportHeight();
  }

  function reportHeight() {
    const height = Math.ceil(document.documentElement.getBoundingClientRect().height);
    if (height !== lastHeight) {
      lastHeight = height;
      post("streamlit:setFrameHeight", { height });
    }
  }

  function applyTheme(theme) {
    if (!theme) return;
    const style = document.documentElement.style;
    const set = (name, value) => value && style.setProperty(name, value);
    set("--text", theme.textColor);
    set("--background", theme.backgroundColor);
    set("--surface", theme.secondaryBackgroundColor);
    set("--primary", theme.primaryColor);
    set("--font", theme.font);
    if (theme.textColor) {
      colors = { text: theme.textColor, grid: "rgba(128,128,128,0.18)", axis: "rgba(128,128,128,0.6)" };
    }
    font = theme.font || font;
  }

  function onRender(args, theme) {
    const fresh = args.tables;
    tables = { ...fresh, alphaOptions: fresh.alpha_options.map(M.alphaFromJson),
      cases: fresh.cases.map((k) => ({ ...k, alpha: M.alphaFromJson(k.alpha) })) };
    applyTheme(theme);
    if (!built) build();
    if (state === null || args.push !== lastPush) {
      state = decodeState(args.view);
      lastPush = args.push;
      syncControls();
    }
    requestDraw();
  }

  window.addEventListener("message", (event) => {
    if (event.data && event.data.type === "streamlit:render") onRender(event.data.args, event.data.theme);
  });
  post("streamlit:componentReady", { apiVersion: 1 });
})();
