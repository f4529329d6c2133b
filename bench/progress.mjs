/**
 * Progress of a bench run, on stderr (stdout carries the reports): which suite, section and case is running, the
 * time spent, and where the number of cases is known an ETA from the mean time of the cases finished so far.
 */

/** `42 s`, `3 min 05 s`. */
export function clock(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? `${s} s` : `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
}

/**
 * A section of `total` cases: `next(what)` announces the next case as `label i/N: what (elapsed …, ETA …)`.
 * The first case has no ETA yet (no case has finished).
 */
export function section(label, total) {
  const started = performance.now();
  let done = 0;
  return {
    next(what) {
      const elapsed = performance.now() - started;
      const eta = done > 0 ? `, ETA ${clock((elapsed / done) * (total - done))}` : '';
      console.error(`${label} ${done + 1}/${total}: ${what} (${clock(elapsed)} elapsed${eta})`);
      done++;
    },
  };
}
