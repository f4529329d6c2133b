// Types of svg.mjs for the TypeScript that imports it (bench/svg.test.ts).

export interface HeatmapCell {
  /** Row key (the exit layer E) and column key (the draft length d). */
  row: number;
  col: number;
  /** Speedup vs ar; not a finite number > 0 (undefined, null from JSON, NaN): drawn as an empty cell. */
  value: number;
  /** Accepted ÷ drafted, printed under the speedup when finite. */
  acceptance?: number;
  /** Framed as the panel's best. */
  best?: boolean;
  /** Corner mark (the default configuration). */
  marked?: boolean;
  /** Flagged: its ids differed from ar's. */
  mismatch?: boolean;
}

export interface HeatmapSpec {
  title: string;
  subtitle?: string[];
  rowLabel?: string;
  colLabel?: string;
  /** Column keys (d values), shared by every panel. */
  columns: number[];
  /** One grid each; a (row, col) without a cell is drawn empty. */
  panels: { title: string; rows: number[]; cells: HeatmapCell[] }[];
  legendLabel?: string;
  markLabel?: string;
  footnotes?: string[];
}

export interface HistogramSpec {
  title: string;
  subtitle?: string[];
  xLabel?: string;
  yLabel?: string;
  /** counts[k]: rounds with exactly k accepted drafts; a count that is not a finite number ≥ 0 is left out. */
  panels: { title: string; notes?: string[]; counts: number[] }[];
  footnotes?: string[];
}

export function escapeXml(value: unknown): string;
/** '#rrggbb' for a speedup > 0 on the diverging log scale saturating at `limit` and 1/limit. */
export function speedupColor(value: number, limit: number): string;
/** WCAG relative luminance of '#rrggbb'. */
export function luminance(color: string): number;
export function heatmapSvg(spec: HeatmapSpec): string;
export function histogramSvg(spec: HistogramSpec): string;
