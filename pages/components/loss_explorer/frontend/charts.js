/*
 * A small canvas line chart for the Loss Explorer: axes, ticks, grid and polylines, redrawn whole on
 * every frame (six charts of a few hundred points each take a few milliseconds). Non-finite values
 * are gaps. The y axis is linear or "symmetric log", u = sign(y)·log10(1 + |y|), which keeps zero and
 * the sign (ψ is odd, an NLL can be negative) while showing values from 0.1 to 10⁶ on one axis.
 */
(function (root) {
  "use strict";

  const MARGIN = { left: 54, right: 12, top: 10, bottom: 36 };

  const symlog = (y) => Math.sign(y) * Math.log10(1 + Math.abs(y));
  const identity = (y) => y;

  function niceStep(span, count) {
    const raw = span / count;
    const magnitude = 10 ** Math.floor(Math.log10(raw));
    const r = raw / magnitude;
    return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * magnitude;
  }

  function linearTicks(lo, hi, count) {
    const step = niceStep(hi - lo, count);
    const ticks = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      ticks.push(Math.abs(v) < step * 1e-9 ? 0 : v);
    }
    return ticks;
  }

  // Ticks of a symlog axis, in data units: 0 and ±10^k inside [lo, hi] (the data's own range, before
  // padding, so a positive quantity gets no negative tick), with 3 or 2 and 5 between when sparse.
  function symlogTicks(lo, hi) {
    const inside = (v) => symlog(v) >= lo - 1e-12 && symlog(v) <= hi + 1e-12;
    for (const mantissas of [[1], [1, 3], [1, 2, 5]]) {
      const ticks = [0];
      for (let k = -3; k <= 12; k++) {
        for (const m of mantissas) {
          ticks.push(m * 10 ** k, -m * 10 ** k);
        }
      }
      const kept = ticks.filter(inside).sort((a, b) => a - b);
      // keep ticks at least ~1/8 of the axis apart, largest magnitude first
      const minGap = (hi - lo) / 8;
      const spaced = [];
      for (const v of kept.sort((a, b) => Math.abs(b) - Math.abs(a))) {
        if (spaced.every((w) => Math.abs(symlog(w) - symlog(v)) >= minGap)) spaced.push(v);
      }
      if (spaced.length >= 4 || mantissas.length === 3) return spaced.sort((a, b) => a - b);
    }
    return [];
  }

  function formatTick(v) {
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e6 || a < 1e-3) return v.toExponential(0).replace("e+", "e").replace("-", "−");
    return Number(v.toPrecision(3)).toLocaleString("en-US").replace("-", "−");
  }

  // [lo, hi] over the finite values of `arrays` (after `transform`), and that range padded by 5 % of its
  // span (the axis).
  function dataRange(arrays, transform) {
    let lo = Infinity;
    let hi = -Infinity;
    for (const values of arrays) {
      for (let i = 0; i < values.length; i++) {
        const u = transform(values[i]);
        if (Number.isFinite(u)) {
          if (u < lo) lo = u;
          if (u > hi) hi = u;
        }
      }
    }
    if (lo > hi) return { data: [-1, 1], axis: [-1, 1] };
    const span = hi > lo ? hi - lo : Math.max(Math.abs(hi), 1);
    return { data: [lo, hi], axis: [lo - 0.05 * span, hi + 0.05 * span] };
  }

  class LineChart {
    constructor(canvas) {
      this.canvas = canvas;
      this.ctx = canvas.getContext("2d");
    }

    // Match the canvas's backing store to its CSS size (and the screen's pixel ratio).
    fit() {
      const ratio = window.devicePixelRatio || 1;
      const width = Math.max(1, Math.round(this.canvas.clientWidth * ratio));
      const height = Math.max(1, Math.round(this.canvas.clientHeight * ratio));
      if (this.canvas.width !== width || this.canvas.height !== height) {
        this.canvas.width = width;
        this.canvas.height = height;
      }
      return ratio;
    }

    /*
     * spec: {x: Float64Array, xRange: [lo, hi], series: [{y, color, width, opacity, dash}],
     *        rangeFrom: [arrays the y range fits], logY, xLabel, yLabel,
     *        marker: {x, y, color} | null, colors: {text, grid, axis}}
     * Returns the x ↔ pixel mapping, for the hover readout.
     */
    draw(spec) {
      const ratio = this.fit();
      const ctx = this.ctx;
      const w = this.canvas.width / ratio;
      const h = this.canvas.height / ratio;
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, w, h);
      const plot = { left: MARGIN.left, top: MARGIN.top, right: w - MARGIN.right, bottom: h - MARGIN.bottom };
      const transform = spec.logY ? symlog : identity;
      const [x0, x1] = spec.xRange;
      const range = dataRange(spec.rangeFrom, transform);
      const [y0, y1] = range.axis;
      const px = (x) => plot.left + ((x - x0) / (x1 - x0)) * (plot.right - plot.left);
      const py = (u) => plot.bottom - ((u - y0) / (y1 - y0)) * (plot.bottom - plot.top);
      const colors = spec.colors;

      // grid and ticks
      ctx.font = "11px " + (spec.font || "sans-serif");
      ctx.lineWidth = 1;
      ctx.strokeStyle = colors.grid;
      ctx.fillStyle = colors.text;
      ctx.textAlign = "center";
      ctx.textBaseline = "top";
      for (const v of linearTicks(x0, x1, 6)) {
        const x = Math.round(px(v)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(x, plot.top);
        ctx.lineTo(x, plot.bottom);
        ctx.stroke();
        ctx.fillText(formatTick(v), x, plot.bottom + 4);
      }
      ctx.textAlign = "right";
      ctx.textBaseline = "middle";
      const yTicks = spec.logY ? symlogTicks(...range.data) : linearTicks(y0, y1, 5);
      for (const v of yTicks) {
        const y = Math.round(py(transform(v))) + 0.5;
        ctx.strokeStyle = v === 0 ? colors.axis : colors.grid;
        ctx.beginPath();
        ctx.moveTo(plot.left, y);
        ctx.lineTo(plot.right, y);
        ctx.stroke();
        ctx.fillText(formatTick(v), plot.left - 5, y);
      }
      // axis titles
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      ctx.fillText(spec.xLabel, (plot.left + plot.right) / 2, h - 2);
      ctx.save();
      ctx.translate(12, (plot.top + plot.bottom) / 2);
      ctx.rotate(-Math.PI / 2);
      ctx.textBaseline = "middle";
      ctx.fillText(spec.yLabel + (spec.logY ? " (symlog)" : ""), 0, 0);
      ctx.restore();

      // curves, clipped to the plot
      ctx.save();
      ctx.beginPath();
      ctx.rect(plot.left, plot.top, plot.right - plot.left, plot.bottom - plot.top);
      ctx.clip();
      const xs = spec.x;
      const cols = new Float64Array(xs.length);
      for (let i = 0; i < xs.length; i++) cols[i] = px(xs[i]);
      for (const s of spec.series) {
        ctx.strokeStyle = s.color;
        ctx.globalAlpha = s.opacity ?? 1;
        ctx.lineWidth = s.width ?? 1.5;
        ctx.setLineDash(s.dash || []);
        ctx.beginPath();
        let pen = false;
        for (let i = 0; i < xs.length; i++) {
          const u = transform(s.y[i]);
          if (!Number.isFinite(u)) {
            pen = false;
            continue;
          }
          const y = Math.max(-1e4, Math.min(1e4, py(u)));
          if (pen) ctx.lineTo(cols[i], y);
          else ctx.moveTo(cols[i], y);
          pen = true;
        }
        ctx.stroke();
      }
      ctx.globalAlpha = 1;
      ctx.setLineDash([]);
      if (spec.marker) {
        const mx = px(spec.marker.x);
        ctx.strokeStyle = colors.axis;
        ctx.beginPath();
        ctx.moveTo(mx, plot.top);
        ctx.lineTo(mx, plot.bottom);
        ctx.stroke();
        const u = transform(spec.marker.y);
        if (Number.isFinite(u)) {
          ctx.fillStyle = spec.marker.color;
          ctx.beginPath();
          ctx.arc(mx, py(u), 4, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
      ctx.restore();
      ctx.strokeStyle = colors.axis;
      ctx.strokeRect(plot.left + 0.5, plot.top + 0.5, plot.right - plot.left - 1, plot.bottom - plot.top - 1);
      return { xFromPixel: (p) => x0 + ((p - plot.left) / (plot.right - plot.left)) * (x1 - x0), plot };
    }
  }

  root.LossCharts = { LineChart, dataRange, symlog, symlogTicks, linearTicks };
})(window);
