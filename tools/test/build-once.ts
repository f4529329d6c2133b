/**
 * Vitest global setup: builds every package (turbo, cached, so a no-op when nothing changed) before the
 * tests run. Most tests import package sources, but worker threads (`WorkerGenerator`), the `mexit serve`
 * and `mexit chat` processes and the packed-install test run the built JavaScript.
 */
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export default function setup(): void {
  const root = fileURLToPath(new URL('../../', import.meta.url));
  const turbo = fileURLToPath(new URL('../../node_modules/.bin/turbo', import.meta.url));
  execFileSync(turbo, ['run', 'build', '--output-logs=errors-only'], { cwd: root, stdio: ['ignore', 'ignore', 'inherit'] });
}
