// Paths into this package, found from this file, so they hold wherever the package is installed.
import { fileURLToPath } from 'node:url';

export const modelDir = fileURLToPath(new URL('./model/', import.meta.url));
export const evalStoriesPath = fileURLToPath(new URL('./data/valid-small.txt', import.meta.url));
