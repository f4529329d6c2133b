/**
 * Dependency-free SVG charts for the bench reports: pure functions from data to an SVG string.
 *
 * - `heatmapSvg(spec)`: small multiples of an E × d grid, each cell coloured by speedup on a diverging
 *   log scale around 1.0× (red below, blue above) and labelled with the speedup and the acceptance rate.
 * - `histogramSvg(spec)`: one bar chart per panel of a count vector (k = 0..n); bar height = the count's share
 *   of its panel's total, on one axis for all panels so they compare; each bar labelled with count and share.
 *
 * All text and attribute values go through `escapeXml`; the output is standalone (white background, no
 * external references), so it renders the same in a browser, in GitHub's Markdown `<img>` and in rsvg-convert.
 * Cells are `<g class="cell" data-row data-col>` and bars `<g class="bar" data-k>`, each with a `<title>`
 * tooltip, so the figures can be inspected (and tested) without rendering them.
 */

const FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, Helvetica, Arial, sans-serif";
const INK = '#1f2328';
const MUTED = '#57606a';
const FAINT = '#8c959f';
const RULE = '#d0d7de';
const EMPTY = '#f6f8fa';
const MISMATCH_STROKE = { fill: 'none', stroke: '#cf222e', 'stroke-width': 2, 'stroke-dasharray': '4 3' };

/** Escapes text for XML content and attribute values. */
export function escapeXml(value) {
  return String(value).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/** Rough width of `text` in px at `size` (sans-serif average glyph ≈ 0.56 em); used for layout only. */
const textWidth = (text, size) => String(text).length * size * 0.56;

const num = (x) => (Number.isInteger(x) ? String(x) : x.toFixed(1));

/** ` k="v"` pairs, values escaped (numbers rounded to 0.1 px); undefined / null / false attributes left out. */
function attributes(attrs) {
  return Object.entries(attrs)
    .filter(([, v]) => v !== undefined && v !== null && v !== false)
    .map(([k, v]) => ` ${k}="${escapeXml(typeof v === 'number' ? num(v) : v)}"`)
    .join('');
}

/** Tagged template for path data: numbers rounded like every other coordinate. */
const pathData = (strings, ...values) => strings.reduce((out, s, i) => out + s + (i < values.length ? num(values[i]) : ''), '');

/** An empty element, e.g. `el('rect', { x, y })`. */
const el = (name, attrs) => `<${name}${attributes(attrs)}/>`;

const rect = (x, y, width, height, attrs = {}) => el('rect', { x, y, width, height, ...attrs });

/** `<text>`; `content` is escaped. */
const text = (x, y, content, attrs = {}) => `<text${attributes({ x, y, ...attrs })}>${escapeXml(content)}</text>`;

/** Text rotated to read bottom-up, centred on (x, y): a vertical axis label. */
function verticalText(x, y, content, attrs = {}) {
  const a = attributes({ transform: `translate(${num(x)} ${num(y)}) rotate(-90)`, 'text-anchor': 'middle', ...attrs });
  return `<text${a}>${escapeXml(content)}</text>`;
}

/** A group with a tooltip: `<g class=…><title>…</title>…children</g>`. */
const group = (attrs, title, children) => [`<g${attributes(attrs)}>`, `<title>${escapeXml(title)}</title>`, ...children, '</g>'];

function svgDocument(width, height, title, body) {
  const w = Math.ceil(width);
  const h = Math.ceil(height);
  const root = { xmlns: 'http://www.w3.org/2000/svg', width: w, height: h, viewBox: `0 0 ${w} ${h}`, 'font-family': FONT, role: 'img' };
  const background = rect(0, 0, w, h, { fill: '#ffffff' });
  return [`<svg${attributes(root)}>`, `<title>${escapeXml(title)}</title>`, background, ...body, '</svg>', ''].join('\n');
}

/** Title and subtitle lines at the top; returns the y below them. */
function header(body, pad, title, subtitle) {
  let y = pad + 18;
  body.push(text(pad, y, title, { 'font-size': 18, 'font-weight': 700, fill: INK }));
  y += 6;
  for (const line of subtitle) {
    y += 17;
    body.push(text(pad, y, line, { 'font-size': 12, fill: MUTED }));
  }
  return y;
}

/** Width that fits the title, the subtitle and footnote lines, and `others` (right edges). */
const documentWidth = (pad, title, subtitle, footnotes, others) =>
  Math.max(
    pad * 2 + textWidth(title, 18) * 1.05,
    ...subtitle.map((s) => pad * 2 + textWidth(s, 12)),
    ...footnotes.map((s) => pad * 2 + textWidth(s, 11.5)),
    ...others,
  );

// ---------------------------------------------------------------- colour

const hex = (c) => [1, 3, 5].map((i) => Number.parseInt(c.slice(i, i + 2), 16));
const byte = (v) => Math.round(Math.min(255, Math.max(0, v)));
const toHex = (rgb) => `#${rgb.map((v) => byte(v).toString(16).padStart(2, '0')).join('')}`;
const mix = (a, b, t) => a.map((v, i) => v + (b[i] - v) * t);

// ColorBrewer RdBu: 1.0× is near-white, slower is red, faster is blue; lightness falls away from 1.0× on both sides.
const NEUTRAL = hex('#f7f7f7');
const BELOW = [hex('#fddbc7'), hex('#f4a582'), hex('#d6604d'), hex('#b2182b')];
const ABOVE = [hex('#d1e5f0'), hex('#92c5de'), hex('#4393c3'), hex('#2166ac')];

/** Interpolates NEUTRAL → stops[last] at t ∈ [0, 1]. */
function ramp(stops, t) {
  const all = [NEUTRAL, ...stops];
  const x = Math.min(1, Math.max(0, t)) * (all.length - 1);
  const i = Math.min(all.length - 2, Math.floor(x));
  return mix(all[i], all[i + 1], x - i);
}

/** Diverging colour '#rrggbb' for a speedup: log scale, 1.0× neutral, `limit` (> 1) and 1/limit the saturated ends. */
export function speedupColor(value, limit) {
  const t = Math.log(value) / Math.log(limit);
  return toHex(t >= 0 ? ramp(ABOVE, t) : ramp(BELOW, -t));
}

/** Relative luminance (WCAG) of '#rrggbb', 0 = black … 1 = white. */
export function luminance(color) {
  const [r, g, b] = hex(color).map((v) => {
    const c = v / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** Ink or white, whichever reads better on `background`. */
const textColorOn = (background) => (luminance(background) > 0.2 ? INK : '#ffffff');

/** Symmetric log-scale limit covering every finite positive value (at least 1.25× so near-1 grids stay pale). */
function speedupLimit(values) {
  let m = Math.log(1.25);
  for (const v of values) if (v > 0 && Number.isFinite(v)) m = Math.max(m, Math.abs(Math.log(v)));
  return Math.exp(m);
}

// ---------------------------------------------------------------- heatmap

const fmtX = (v) => `${v.toFixed(2)}×`;
const fmtPct = (v) => `${Math.round(v * 100)}%`;
/** A speedup the heatmap can colour: anything else (undefined, null from JSON's NaN, ≤ 0) is an empty cell. */
const measured = (v) => Number.isFinite(v) && v > 0;

/** The heatmap of `spec` (a HeatmapSpec, see svg.d.mts). */
export function heatmapSvg(spec) {
  const { title, subtitle = [], rowLabel = 'exit layer E', colLabel = 'draft length d', columns, panels, footnotes = [] } = spec;
  const legendLabel = spec.legendLabel ?? 'speedup vs ar';
  const markLabel = spec.markLabel ?? 'marked';
  const rowName = rowLabel.split(' ').pop();
  const colName = colLabel.split(' ').pop();
  const pad = 24;
  const cellW = 78;
  const cellH = 50;
  const gridX = pad + 52;
  const gridW = columns.length * cellW;
  const limit = speedupLimit(panels.flatMap((p) => p.cells.map((c) => c.value)));
  const body = [];
  let y = header(body, pad, title, subtitle) + 14;
  const seen = { best: false, marked: false, missing: false, mismatch: false };

  /** One cell's elements at (cx, cy): colour, speedup, acceptance (or the mismatch flag), markers. */
  function cell(c, E, d, cx, cy) {
    const inner = [cx + 1, cy + 1, cellW - 2, cellH - 2];
    if (!c || !measured(c.value)) {
      seen.missing = true;
      return group({ class: 'cell empty', 'data-row': E, 'data-col': d }, `${rowName} = ${E}, ${colName} = ${d}: not measured`, [
        rect(...inner, { rx: 3, fill: EMPTY }),
      ]);
    }
    const fill = speedupColor(c.value, limit);
    const ink = textColorOn(fill);
    const hasAcceptance = Number.isFinite(c.acceptance);
    const tip =
      `${rowName} = ${E}, ${colName} = ${d}: ${fmtX(c.value)}` +
      (hasAcceptance ? `, acceptance ${fmtPct(c.acceptance)}` : '') +
      (c.mismatch ? ', ids differ from ar' : '');
    const out = [
      rect(...inner, { rx: 3, fill }),
      text(cx + cellW / 2, cy + 22, fmtX(c.value), { 'font-size': 15, 'font-weight': 700, fill: ink, 'text-anchor': 'middle' }),
    ];
    if (c.mismatch) {
      seen.mismatch = true;
      out.push(text(cx + cellW / 2, cy + 39, 'ids ≠ ar', { 'font-size': 11, 'font-weight': 700, fill: ink, 'text-anchor': 'middle' }));
      out.push(rect(cx + 2.5, cy + 2.5, cellW - 5, cellH - 5, { rx: 2, ...MISMATCH_STROKE }));
    } else if (hasAcceptance) {
      const style = { 'font-size': 11, fill: ink, 'fill-opacity': 0.85, 'text-anchor': 'middle' };
      out.push(text(cx + cellW / 2, cy + 39, `acc ${fmtPct(c.acceptance)}`, style));
    }
    if (c.best) {
      seen.best = true;
      out.push(rect(cx + 2, cy + 2, cellW - 4, cellH - 4, { rx: 2, fill: 'none', stroke: INK, 'stroke-width': 2.5 }));
    }
    if (c.marked) {
      seen.marked = true;
      // A corner triangle, clear of the centred labels.
      const [r, t] = [cx + cellW - 1, cy + 1];
      out.push(el('path', { d: pathData`M${r - 16} ${t}H${r - 3}Q${r} ${t} ${r} ${t + 3}V${t + 16}Z`, fill: INK }));
    }
    return group({ class: 'cell', 'data-row': E, 'data-col': d }, tip, out);
  }

  for (const panel of panels) {
    y += 22;
    body.push(text(pad, y, panel.title, { 'font-size': 14, 'font-weight': 700, fill: INK }));
    y += 20;
    body.push(text(gridX + gridW / 2, y, colLabel, { 'font-size': 12, fill: MUTED, 'text-anchor': 'middle' }));
    y += 18;
    for (const [j, d] of columns.entries()) {
      body.push(text(gridX + j * cellW + cellW / 2, y, d, { 'font-size': 12, 'font-weight': 700, fill: INK, 'text-anchor': 'middle' }));
    }
    y += 8;
    const top = y;
    const gridH = panel.rows.length * cellH;
    const axis = textWidth(rowLabel, 12) + 8 <= gridH ? rowLabel : rowName; // one-row panels get the short name
    body.push(verticalText(pad + 12, top + gridH / 2, axis, { 'font-size': 12, fill: MUTED }));
    const byKey = new Map(panel.cells.map((c) => [`${c.row},${c.col}`, c]));
    for (const [i, E] of panel.rows.entries()) {
      const cy = top + i * cellH;
      body.push(text(gridX - 10, cy + cellH / 2 + 4, E, { 'font-size': 12, 'font-weight': 700, fill: INK, 'text-anchor': 'end' }));
      for (const [j, d] of columns.entries()) body.push(...cell(byKey.get(`${E},${d}`), E, d, gridX + j * cellW, cy));
    }
    y = top + gridH;
  }

  // ---- legend: colour bar (log scale) and markers
  y += 34;
  const barX = gridX;
  const barW = Math.min(300, Math.max(220, gridW * 0.45));
  const lo = 1 / limit;
  const at = (f) => Math.exp(Math.log(lo) + f * (Math.log(limit) - Math.log(lo))); // value at fraction f of the bar
  const pos = (v) => barX + ((Math.log(v) - Math.log(lo)) / (Math.log(limit) - Math.log(lo))) * barW;
  body.push(text(barX, y - 8, legendLabel, { 'font-size': 12, fill: MUTED }));
  const stops = Array.from({ length: 17 }, (_, i) =>
    el('stop', { offset: `${((i / 16) * 100).toFixed(1)}%`, 'stop-color': speedupColor(at(i / 16), limit) }),
  );
  body.push(`<defs><linearGradient id="speedup-scale" x1="0" x2="1" y1="0" y2="0">${stops.join('')}</linearGradient></defs>`);
  body.push(rect(barX, y, barW, 12, { fill: 'url(#speedup-scale)', stroke: RULE, 'stroke-width': 1 }));
  const nice = [0.1, 0.2, 0.25, 0.33, 0.5, 0.67, 0.75, 0.8, 1, 1.25, 1.5, 2, 2.5, 3, 4, 5, 10];
  const ticks = nice.filter((v) => v !== 1 && v >= lo * 1.0001 && v <= limit / 1.0001);
  // 1.0× first so it always survives the spacing filter, then the rest by distance from it.
  const placed = [];
  for (const v of [1, ...ticks.sort((a, b) => Math.abs(Math.log(a)) - Math.abs(Math.log(b)))]) {
    const x = pos(v);
    if (placed.some((p) => Math.abs(p - x) < 34)) continue;
    placed.push(x);
    body.push(el('line', { x1: x, x2: x, y1: y + 12, y2: y + 16, stroke: MUTED, 'stroke-width': 1 }));
    body.push(text(x, y + 28, `${v}×`, { 'font-size': 11, fill: MUTED, 'text-anchor': 'middle' }));
  }
  body.push(text(barX, y + 44, 'slower than ar', { 'font-size': 11, fill: '#b2182b' }));
  body.push(text(barX + barW, y + 44, 'faster than ar', { 'font-size': 11, fill: '#2166ac', 'text-anchor': 'end' }));

  const mx = barX + barW + 30;
  const swatch = { rx: 2 };
  const items = [
    [seen.best, 'best in panel', [rect(mx, 0, 18, 14, { ...swatch, fill: '#ffffff', stroke: INK, 'stroke-width': 2.5 })]],
    [
      seen.marked,
      markLabel,
      [
        rect(mx, 0, 18, 14, { ...swatch, fill: '#eaeef2' }),
        el('path', { d: pathData`M${mx + 6} 0H${mx + 16}Q${mx + 18} 0 ${mx + 18} 2V12Z`, fill: INK }),
      ],
    ],
    [seen.missing, 'not measured', [rect(mx, 0, 18, 14, { ...swatch, fill: EMPTY, stroke: RULE })]],
    [seen.mismatch, 'ids ≠ ar (bug)', [rect(mx, 0, 18, 14, { ...swatch, ...MISMATCH_STROKE })]],
  ].filter(([shown]) => shown);
  let my = y - 2;
  let maxRight = mx;
  for (const [, label, marks] of items) {
    body.push(`<g transform="translate(0 ${num(my)})">`, ...marks, text(mx + 26, 11, label, { 'font-size': 12, fill: INK }), '</g>');
    maxRight = Math.max(maxRight, mx + 26 + textWidth(label, 12));
    my += 20;
  }
  y = Math.max(y + 44, my - 6);
  for (const line of footnotes) {
    y += 18;
    body.push(text(pad, y, line, { 'font-size': 11.5, fill: MUTED }));
  }
  const width = documentWidth(pad, title, subtitle, footnotes, [
    gridX + gridW + pad,
    maxRight + pad,
    ...panels.map((p) => pad * 2 + textWidth(p.title, 14) * 1.05),
  ]);
  return svgDocument(width, y + pad, title, body);
}

// ---------------------------------------------------------------- histogram

/** Smallest "nice" step (1, 2, 2.5, 5 × 10ⁿ) giving at most `maxTicks` intervals up to `max`. */
function niceStep(max, maxTicks) {
  const raw = max / maxTicks;
  const p = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].find((m) => m * p >= raw) * p;
}

/** The histogram of `spec` (a HistogramSpec, see svg.d.mts). */
export function histogramSvg(spec) {
  const { title, subtitle = [], panels, footnotes = [] } = spec;
  const xLabel = spec.xLabel ?? 'k';
  const yLabel = spec.yLabel ?? 'share';
  const pad = 24;
  const slot = 56;
  const barW = 36;
  const plotH = 150;
  const x0 = pad + 58;
  const body = [];
  let y = header(body, pad, title, subtitle) + 8;
  // A count that is not a finite number ≥ 0 (null in JSON) gets an empty slot labelled '–', outside the total.
  const shares = panels.map(({ counts }) => {
    const known = counts.map((c) => Number.isFinite(c) && c >= 0);
    const total = counts.reduce((a, c, k) => a + (known[k] ? c : 0), 0);
    return { known, total, max: total ? Math.max(...counts.filter((_, k) => known[k])) / total : 0 };
  });
  // One percentage axis for every panel, so equal heights mean equal shares of rounds across panels.
  const maxPct = Math.max(0, ...shares.map((s) => s.max)) * 100;
  const step = maxPct > 0 ? niceStep(maxPct, 4) : 1;
  const top = Math.max(step, Math.ceil(maxPct / step - 1e-9) * step);
  const widths = [];
  for (const [p, panel] of panels.entries()) {
    const { counts } = panel;
    const { known, total } = shares[p];
    y += 28;
    body.push(text(pad, y, panel.title, { 'font-size': 14, 'font-weight': 700, fill: INK }));
    widths.push(pad * 2 + textWidth(panel.title, 14) * 1.05);
    for (const line of panel.notes ?? []) {
      y += 17;
      body.push(text(pad, y, line, { 'font-size': 12, fill: MUTED }));
      widths.push(pad * 2 + textWidth(line, 12));
    }
    const plotTop = y + 44; // room for the tallest bar's two labels
    const base = plotTop + plotH;
    const plotW = Math.max(counts.length, 1) * slot;
    const slotX = (k) => x0 + k * slot + slot / 2; // centre of slot k
    if (!total) {
      body.push(text(x0 + plotW / 2, plotTop + plotH / 2, 'no rounds recorded', { 'font-size': 12, fill: FAINT, 'text-anchor': 'middle' }));
    } else {
      const yOf = (pct) => base - (pct / top) * plotH;
      for (let t = 0; t <= top + 1e-9; t += step) {
        const gy = yOf(t);
        body.push(el('line', { x1: x0, x2: x0 + plotW, y1: gy, y2: gy, stroke: t === 0 ? FAINT : '#eaeef2', 'stroke-width': 1 }));
        body.push(text(x0 - 8, gy + 4, `${+t.toFixed(1)}%`, { 'font-size': 11, fill: MUTED, 'text-anchor': 'end' }));
      }
      for (const [k, c] of counts.entries()) {
        if (!known[k]) {
          body.push(text(slotX(k), base - 6, '–', { 'font-size': 12, fill: FAINT, 'text-anchor': 'middle' }));
          continue;
        }
        const pct = (c / total) * 100;
        const by = yOf(pct);
        const out = [];
        // The k = d bar (every draft accepted) is darker.
        if (c > 0) out.push(rect(slotX(k) - barW / 2, by, barW, base - by, { fill: k === counts.length - 1 ? '#2166ac' : '#6ea6d3' }));
        out.push(text(slotX(k), by - 19, c, { 'font-size': 12, 'font-weight': 700, fill: INK, 'text-anchor': 'middle' }));
        const share = `${pct < 10 && pct > 0 ? pct.toFixed(1) : pct.toFixed(0)}%`;
        out.push(text(slotX(k), by - 6, share, { 'font-size': 11, fill: MUTED, 'text-anchor': 'middle' }));
        body.push(...group({ class: 'bar', 'data-k': k }, `k = ${k}: ${c} of ${total} rounds (${pct.toFixed(1)}%)`, out));
      }
    }
    for (const k of counts.keys()) {
      body.push(text(slotX(k), base + 16, k, { 'font-size': 12, 'font-weight': 700, fill: INK, 'text-anchor': 'middle' }));
      const end = k === 0 ? 'none' : k === counts.length - 1 ? 'all' : '';
      if (end) body.push(text(slotX(k), base + 29, end, { 'font-size': 10.5, fill: FAINT, 'text-anchor': 'middle' }));
    }
    body.push(verticalText(pad + 10, plotTop + plotH / 2, yLabel, { 'font-size': 12, fill: MUTED }));
    // Centred under the bars, but never past the left margin (a plot of two bars is narrower than the label).
    const labelX = Math.max(x0 + plotW / 2, pad + textWidth(xLabel, 12) / 2);
    body.push(text(labelX, base + 46, xLabel, { 'font-size': 12, fill: MUTED, 'text-anchor': 'middle' }));
    widths.push(x0 + plotW + pad, labelX + textWidth(xLabel, 12) / 2 + pad);
    y = base + 46;
  }
  for (const line of footnotes) {
    y += 20;
    body.push(text(pad, y, line, { 'font-size': 11.5, fill: MUTED }));
  }
  return svgDocument(documentWidth(pad, title, subtitle, footnotes, widths), y + pad, title, body);
}
