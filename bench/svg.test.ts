/**
 * The bench's SVG figures (bench/svg.mjs, bench/figures.mjs) read back as XML: well-formed, one heatmap cell per
 * (E, d) with its labels, a colour scale monotone in speedup, bars proportional to counts, no NaN for missing
 * data, text escaped. The SVG is parsed by a small strict XML reader below (no dependency).
 */
import { describe, expect, it } from 'vitest';
import { acceptFigureName, acceptStats, addCounts, gridFigureName, speculativeFigures } from './figures.mjs';
import { escapeXml, heatmapSvg, histogramSvg, luminance, speedupColor } from './svg.mjs';

interface XmlElement {
  name: string;
  attrs: Record<string, string>;
  children: XmlElement[];
  /** Decoded character data directly inside this element. */
  text: string;
}

const ENTITIES: Record<string, string> = { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" };

/** Decodes the five XML entities and character references; throws on a bare '&' or an unknown entity. */
function decode(raw: string): string {
  return raw.replace(/&([^;\s]*);?/g, (whole, name: string) => {
    if (!whole.endsWith(';')) throw new Error(`bare '&' in ${JSON.stringify(raw)}`);
    if (name in ENTITIES) return ENTITIES[name];
    const m = /^#(?:x([0-9a-fA-F]+)|([0-9]+))$/.exec(name);
    if (!m) throw new Error(`unknown entity &${name};`);
    return String.fromCodePoint(m[1] ? Number.parseInt(m[1], 16) : Number(m[2]));
  });
}

/** Strict enough for our output: one root, balanced tags, quoted unique attributes, no stray '<' or '&'. */
function parseXml(xml: string): XmlElement {
  // Every position matches one alternative (a tag, a text run, or a stray '<'), so the loop consumes all input.
  const token = /<(\/?)([A-Za-z][\w:.-]*)((?:\s+[\w:.-]+="[^"<]*")*)\s*(\/?)>|([^<]+)|(<)/gy;
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  for (let m = token.exec(xml); m; m = token.exec(xml)) {
    const [, closing, name, attrText, selfClosing, chars, stray] = m;
    if (stray) throw new Error(`stray '<' at ${m.index}: ${JSON.stringify(xml.slice(m.index, m.index + 40))}`);
    if (chars !== undefined) {
      if (!stack.length) {
        if (chars.trim()) throw new Error(`text outside the root: ${JSON.stringify(chars)}`);
        continue;
      }
      stack[stack.length - 1].text += decode(chars);
      continue;
    }
    if (closing) {
      const open = stack.pop();
      if (open?.name !== name) throw new Error(`</${name}> closes <${open?.name}>`);
      continue;
    }
    const attrs: Record<string, string> = {};
    for (const [, key, value] of attrText.matchAll(/([\w:.-]+)="([^"]*)"/g)) {
      if (key in attrs) throw new Error(`duplicate attribute ${key} on <${name}>`);
      attrs[key] = decode(value);
    }
    const element: XmlElement = { name, attrs, children: [], text: '' };
    if (stack.length) stack[stack.length - 1].children.push(element);
    else if (root) throw new Error(`second root <${name}>`);
    else root = element;
    if (!selfClosing) stack.push(element);
  }
  if (stack.length) throw new Error(`unclosed <${stack.map((e) => e.name).join('> <')}>`);
  if (!root) throw new Error('no root element');
  return root;
}

/** Every element under `root` (root included), depth first. */
function all(root: XmlElement): XmlElement[] {
  return [root, ...root.children.flatMap(all)];
}

/** The direct child elements' texts, in order. */
const texts = (e: XmlElement) => e.children.filter((c) => c.name === 'text').map((c) => c.text);
const titleOf = (e: XmlElement) => e.children.find((c) => c.name === 'title')?.text;
const classed = (root: XmlElement, cls: string) => all(root).filter((e) => e.attrs.class?.split(' ').includes(cls));
const rgb = (color: string) => [1, 3, 5].map((i) => Number.parseInt(color.slice(i, i + 2), 16));

/** A 3 × 3 grid (E ∈ {1, 2, 4}, d ∈ {1, 2, 3}) with one cell left out: (4, 3). */
function gridSpec() {
  const rows = [1, 2, 4];
  const columns = [1, 2, 3];
  const cells = rows.flatMap((E) => columns.map((d) => ({ row: E, col: d, value: 0.5 + E * 0.25 + d * 0.1, acceptance: 0.9 - 0.1 * d })));
  return {
    title: 'grid',
    columns,
    panels: [{ title: 'exact drafts', rows, cells: cells.filter((c) => !(c.row === 4 && c.col === 3)) }],
  };
}

describe('escapeXml', () => {
  it('escapes the five XML specials and nothing else', () => {
    expect(escapeXml(`a<b & "c" 'd'> ×`)).toBe('a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt; ×');
    expect(escapeXml(3)).toBe('3');
  });
});

describe('the XML reader used here', () => {
  it('rejects what is not well-formed', () => {
    expect(() => parseXml('<svg><g></svg>')).toThrow();
    expect(() => parseXml('<svg><text>a < b</text></svg>')).toThrow();
    expect(() => parseXml('<svg><text>a & b</text></svg>')).toThrow();
    expect(() => parseXml('<svg x="1" x="2"/>')).toThrow();
    expect(() => parseXml('<svg/><svg/>')).toThrow();
    expect(parseXml('<svg a="&lt;1&gt;"><text>x &amp; y</text></svg>').children[0].text).toBe('x & y');
  });
});

describe('heatmapSvg', () => {
  it('is a well-formed standalone SVG document', () => {
    const svg = heatmapSvg(gridSpec());
    const root = parseXml(svg);
    expect(root.name).toBe('svg');
    expect(root.attrs.xmlns).toBe('http://www.w3.org/2000/svg');
    expect(Number(root.attrs.width)).toBeGreaterThan(300);
    expect(Number(root.attrs.height)).toBeGreaterThan(200);
    expect(root.attrs.viewBox).toBe(`0 0 ${root.attrs.width} ${root.attrs.height}`);
  });

  it('draws one cell per (E, d), labelled with its speedup and acceptance; a cell not given is empty', () => {
    const spec = gridSpec();
    const cells = classed(parseXml(heatmapSvg(spec)), 'cell');
    expect(cells).toHaveLength(9);
    const keys = cells.map((c) => `${c.attrs['data-row']},${c.attrs['data-col']}`);
    expect(new Set(keys).size).toBe(9);
    expect(keys.sort()).toEqual(['1,1', '1,2', '1,3', '2,1', '2,2', '2,3', '4,1', '4,2', '4,3']);
    for (const given of spec.panels[0].cells) {
      const cell = cells.find((c) => c.attrs['data-row'] === String(given.row) && c.attrs['data-col'] === String(given.col))!;
      const acc = `${Math.round(given.acceptance * 100)}%`;
      expect(texts(cell)).toEqual([`${given.value.toFixed(2)}×`, `acc ${acc}`]);
      expect(titleOf(cell)).toBe(`E = ${given.row}, d = ${given.col}: ${given.value.toFixed(2)}×, acceptance ${acc}`);
    }
    const empty = cells.filter((c) => c.attrs.class === 'cell empty');
    expect(empty.map((c) => [c.attrs['data-row'], c.attrs['data-col']])).toEqual([['4', '3']]);
    expect(texts(empty[0])).toEqual([]);
  });

  it('colours cells on a scale monotone in speedup: paler towards 1.0×, red below, blue above', () => {
    const values = [0.4, 0.6, 0.8, 0.95, 1, 1.1, 1.4, 1.8, 2.5];
    const spec = {
      title: 'scale',
      columns: values.map((_, j) => j),
      panels: [{ title: 'one row', rows: [1], cells: values.map((value, j) => ({ row: 1, col: j, value })) }],
    };
    const cells = classed(parseXml(heatmapSvg(spec)), 'cell');
    const fill = (j: number) => cells.find((c) => c.attrs['data-col'] === String(j))!.children.find((c) => c.name === 'rect')!.attrs.fill;
    const fills = values.map((_, j) => fill(j));
    const lum = fills.map(luminance);
    const at1 = values.indexOf(1);
    for (let j = 0; j < at1; j++) expect(lum[j]).toBeLessThan(lum[j + 1]); // darker the slower
    for (let j = at1; j < values.length - 1; j++) expect(lum[j + 1]).toBeLessThan(lum[j]); // darker the faster
    for (const [j, v] of values.entries()) {
      const [r, , b] = rgb(fills[j]);
      if (v < 1) expect(r).toBeGreaterThan(b);
      if (v > 1) expect(b).toBeGreaterThan(r);
    }
    // The scale is symmetric in log(speedup): 2× and 0.5× are equally far from neutral.
    expect(luminance(speedupColor(2, 3))).toBeCloseTo(luminance(speedupColor(0.5, 3)), 1);
    expect(speedupColor(1, 2)).toBe('#f7f7f7');
  });

  it('draws non-finite or missing speedups as empty cells and never prints NaN', () => {
    const spec = {
      title: 'holes',
      columns: [1, 2, 3, 4, 5],
      panels: [
        {
          title: 'p',
          rows: [1],
          cells: [
            { row: 1, col: 1, value: Number.NaN, acceptance: 0.5 },
            { row: 1, col: 2, value: null as unknown as number },
            { row: 1, col: 3, value: Number.POSITIVE_INFINITY },
            { row: 1, col: 4, value: 1.5, acceptance: Number.NaN },
            { row: 1, col: 5, value: 0 },
          ],
        },
      ],
    };
    const svg = heatmapSvg(spec);
    expect(svg).not.toMatch(/NaN|undefined|Infinity|null/);
    const cells = classed(parseXml(svg), 'cell');
    expect(cells.filter((c) => c.attrs.class === 'cell empty').map((c) => c.attrs['data-col'])).toEqual(['1', '2', '3', '5']);
    const measured = cells.find((c) => c.attrs['data-col'] === '4')!;
    expect(texts(measured)).toEqual(['1.50×']);
  });

  it('escapes text: titles and labels read back exactly', () => {
    const spec = { ...gridSpec(), title: 'E < d & "q" \'s\'', subtitle: ['a <b>'], footnotes: ['x & y'] };
    spec.panels[0].title = '<script>alert(1)</script>';
    const root = parseXml(heatmapSvg(spec));
    const allText = all(root)
      .filter((e) => e.name === 'text')
      .map((e) => e.text);
    expect(allText).toEqual(expect.arrayContaining(['E < d & "q" \'s\'', 'a <b>', 'x & y', '<script>alert(1)</script>']));
    expect(titleOf(root)).toBe('E < d & "q" \'s\'');
    expect(all(root).some((e) => e.name === 'script')).toBe(false);
  });
});

describe('histogramSvg', () => {
  const bars = (root: XmlElement) =>
    classed(root, 'bar').map((g) => ({
      k: Number(g.attrs['data-k']),
      height: Number(g.children.find((c) => c.name === 'rect')?.attrs.height ?? 0),
      labels: texts(g),
      title: titleOf(g),
    }));

  it('draws bars proportional to the counts, on one axis of shares for every panel', () => {
    const counts = [3, 5, 0, 1, 3];
    const other = [1, 1, 6];
    const root = parseXml(
      histogramSvg({
        title: 'h',
        panels: [
          { title: 'a', counts },
          { title: 'b', counts: other },
        ],
      }),
    );
    const drawn = bars(root);
    expect(drawn.map((b) => b.k)).toEqual([0, 1, 2, 3, 4, 0, 1, 2]);
    const first = drawn.slice(0, 5);
    const second = drawn.slice(5);
    // Height per round's share is the same everywhere (rounded to 0.1 px).
    const perShare = first[1].height / (5 / 12);
    for (const [k, b] of first.entries()) expect(b.height).toBeCloseTo((counts[k] / 12) * perShare, 0);
    for (const [k, b] of second.entries()) expect(b.height).toBeCloseTo((other[k] / 8) * perShare, 0);
    // The axis reaches the largest share of any panel (75%): its top tick is at or above it.
    const ticks = all(root).filter((e) => e.name === 'text' && e.attrs['text-anchor'] === 'end' && e.text.endsWith('%'));
    expect(Math.max(...ticks.map((e) => Number.parseFloat(e.text)))).toBeGreaterThanOrEqual(75);
    expect(first[2].height).toBe(0); // no rect for a zero count
    expect(first[1].labels).toEqual(['5', '42%']);
    expect(first[3].labels).toEqual(['1', '8.3%']);
    expect(first[4].title).toBe('k = 4: 3 of 12 rounds (25.0%)');
  });

  it('leaves non-finite counts out of the total and draws them as empty slots', () => {
    const svg = histogramSvg({ title: 'h', panels: [{ title: 'a', counts: [2, null as unknown as number, Number.NaN, 6] }] });
    expect(svg).not.toMatch(/NaN|undefined|null/);
    const drawn = bars(parseXml(svg));
    expect(drawn.map((b) => b.k)).toEqual([0, 3]);
    expect(drawn[1].title).toBe('k = 3: 6 of 8 rounds (75.0%)');
    expect(drawn[1].height / drawn[0].height).toBeCloseTo(3, 1);
  });

  it('says so when a panel has no rounds', () => {
    const root = parseXml(histogramSvg({ title: 'h', panels: [{ title: 'a', counts: [0, 0] }] }));
    expect(bars(root)).toEqual([]);
    expect(all(root).some((e) => e.text === 'no rounds recorded')).toBe(true);
  });
});

describe('speculative figures from a report JSON', () => {
  /** The shape bench/run.mjs writes, reduced to what the figures read. */
  function report(withAcceptCounts: boolean) {
    const grid = [1, 2].flatMap((E) => [1, 2, 4].map((d) => ({ E, d, speedup: 1 + E * 0.2 - d * 0.05, acceptance: 0.8, idsMatch: true })));
    grid[5].speedup = null as unknown as number; // NaN in the bench becomes null in JSON
    const recorded = { E: 2, d: 4, quantization: 'int8', bonus: 'on', speedup: 1.7 };
    const sections: Record<string, { rows: object[] }> = {
      grid: { rows: grid },
      draftVariants: { rows: [{ E: 2, d: 4, quantization: 'int8', bonus: 'on', speedup: 1.8, acceptance: 0.7, idsMatch: true }] },
    };
    if (withAcceptCounts) {
      sections.acceptCounts = {
        rows: [
          { role: 'default (recorded settings)', ...recorded, acceptCounts: [1, 2, 0, 3, 4] },
          { role: '', E: 1, d: 1, quantization: 'none', bonus: 'on', speedup: 1.1, acceptCounts: [5, 5] },
        ],
      };
    }
    return {
      name: 'tiny-speculative',
      machine: { date: '2026-01-02T03:04:05.000Z', cpu: 'CPU <x>', cores: 2 },
      summary: { model: 'tiny', numLayers: 4, prompts: 2, maxNewTokens: 16, confirmed: { best: recorded, recorded, passes: 1 } },
      sections,
    };
  }

  it('draws both figures, named after the model, from a report with accept_counts', () => {
    const figures = speculativeFigures(report(true));
    expect(figures.map((f) => f.file)).toEqual([gridFigureName('tiny'), acceptFigureName('tiny')]);
    expect(figures.map((f) => f.file)).toEqual(['tiny-speculative-grid.svg', 'tiny-accept-lengths.svg']);
    const grid = parseXml(figures[0].svg);
    // Exact-draft panel 2 × 3 plus the int8 panel's row (E = 2) × 3 columns.
    expect(classed(grid, 'cell')).toHaveLength(9);
    expect(classed(grid, 'empty')).toHaveLength(1 + 2);
    expect(figures[0].svg).not.toMatch(/NaN|undefined|null/);
    const accept = parseXml(figures[1].svg);
    // Only the rows with a role are drawn: one panel of 5 bars (k = 2 has a zero count, still a labelled slot).
    expect(classed(accept, 'bar').map((b) => b.attrs['data-k'])).toEqual(['0', '1', '2', '3', '4']);
    expect(all(accept).some((e) => e.name === 'text' && e.text.startsWith('default (recorded settings): E = 2, d = 4'))).toBe(true);
  });

  it('draws only the heatmap from a report written before accept_counts existed', () => {
    const figures = speculativeFigures(report(false));
    expect(figures.map((f) => f.file)).toEqual(['tiny-speculative-grid.svg']);
    expect(() => parseXml(figures[0].svg)).not.toThrow();
  });
});

describe('accept_counts helpers', () => {
  it('adds count vectors of different lengths', () => {
    expect(addCounts([1, 2], [3])).toEqual([4, 2]);
    expect(addCounts([], [0, 1, 2])).toEqual([0, 1, 2]);
  });

  it('summarises a count vector', () => {
    const st = acceptStats([3, 5, 0, 1, 3]);
    expect(st.rounds).toBe(12);
    expect(st.meanAccepted).toBeCloseTo((5 + 3 + 12) / 12, 12);
    expect(st.fullRounds).toBeCloseTo(3 / 12, 12);
    expect(acceptStats([]).meanAccepted).toBeUndefined();
  });
});
