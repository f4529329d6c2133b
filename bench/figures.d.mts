// Types of figures.mjs for the TypeScript that imports it (bench/svg.test.ts).

export function gridFigureName(model: string): string;
export function acceptFigureName(model: string): string;
export function addCounts(a?: number[], b?: number[]): number[];
export function acceptStats(counts?: number[]): { rounds: number; meanAccepted?: number; fullRounds?: number };
/** The figures a speculative report's JSON (as bench/run.mjs writes it) has the data for. */
export function speculativeFigures(report: object): { file: string; svg: string }[];
