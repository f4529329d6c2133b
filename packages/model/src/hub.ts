/**
 * Models by hub id: `org/name[@revision]` resolved to a snapshot directory of the local Hugging Face cache (the
 * layout huggingface_hub, transformers and hf-hub share), downloaded into it when missing:
 *
 *   <cache>/models--org--name/blobs/<etag>               file contents, named by etag (the sha256 for LFS files)
 *   <cache>/models--org--name/snapshots/<commit>/<file>  relative symlinks to ../../blobs/<etag>
 *   <cache>/models--org--name/refs/<revision>            the commit a branch or tag pointed to when last resolved
 *
 * Writes are ordered so that no reader sees half a model: a blob is written as <etag>.incomplete (kept when a
 * transfer breaks, so the next call resumes it with a Range request), checked against its size and, for LFS
 * files, its sha256, and only then renamed into blobs/; the snapshot links follow once every blob is in, weights
 * last; the ref is written last of all.
 */
import { createHash, type Hash } from 'node:crypto';
import fs from 'node:fs';
import { homedir } from 'node:os';
import path from 'node:path';
import { CHECKPOINT_FILES, ConfigError, FILE_SIZE_LIMITS, formatValue, readJsonFile } from '@mexit/core';

export interface HubProgress {
  status: 'download';
  /** File name in the repo, e.g. 'model.safetensors'. */
  file: string;
  /** Bytes of the file on disk so far (a resumed download starts where the last one stopped). */
  loaded: number;
  total: number;
}

export interface HubOptions {
  /** Branch, tag or commit hash. Default 'main'; an `@revision` in the id takes its place. */
  revision?: string;
  /** The cache directory. Default: HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub. */
  cacheDir?: string;
  /** The hub's URL. Default: HF_ENDPOINT, else https://huggingface.co. */
  endpoint?: string;
  /** Use the cache only, never the network. Default: HF_HUB_OFFLINE set to 1 (or true, yes, on). */
  offline?: boolean;
  /** Bearer token for private and gated repos, sent to the endpoint only. Default: HF_TOKEN. */
  token?: string;
  /** Download progress, at least at the start and the end of each file and about every 1% between. */
  onProgress?: (event: HubProgress) => void;
}

/**
 * A hub id the cache or the hub could not turn into a model. Codes: HUB_ID_INVALID, HUB_OFFLINE (not cached and
 * offline), MODEL_NOT_FOUND, REVISION_NOT_FOUND, HUB_NOT_A_MODEL (no config.json or weights in the repo),
 * HUB_UNREACHABLE, HUB_HTTP, HUB_INCOMPLETE (a transfer broke; the next call resumes it), HUB_CHECKSUM,
 * HUB_CACHE_PERMISSION, HUB_CACHE_IO. Messages name the id, the revision and the paths or URLs looked at.
 */
export class HubError extends ConfigError {}

const DEFAULT_ENDPOINT = 'https://huggingface.co';
/** What the loader reads besides the weights; anything else in a repo (ONNX exports, READMEs, images) is skipped. */
const MODEL_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.json',
  'tokenizer_config.json',
  'chat_template.jinja',
  'chat_template.json',
];
/** One part of org/name: huggingface_hub's rule (word characters, '.', '-', not at the ends; no '--' or '..'). */
const NAME_PART = /^\w(?:[\w.-]{0,94}\w)?$/;
const COMMIT = /^[0-9a-f]{40}$/;
const SHA256 = /^[0-9a-f]{64}$/;
/** An etag becomes a file name in blobs/: nothing that could leave the directory. */
const SAFE_ETAG = /^\w[\w.-]{0,127}$/;

export interface HubId {
  repo: string;
  revision?: string;
}

function validRevision(revision: string): boolean {
  return revision.length <= 255 && /^[\w.-]+(?:\/[\w.-]+)*$/.test(revision) && !revision.split('/').some((p) => p === '.' || p === '..');
}

/** `org/name[@revision]` → its parts; null when `s` is not a well-formed hub id. */
export function parseHubId(s: string): HubId | null {
  const at = s.indexOf('@');
  const repo = at < 0 ? s : s.slice(0, at);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => NAME_PART.test(p) && !p.includes('--') && !p.includes('..'))) return null;
  if (at < 0) return { repo };
  const revision = s.slice(at + 1);
  return validRevision(revision) ? { repo, revision } : null;
}

/**
 * Whether a path that does not exist was meant as a hub id: relative, one '/' before any '@'. Such paths go to
 * resolveModelSource (which rejects malformed ids with HUB_ID_INVALID); others keep the missing-directory error.
 */
export function looksLikeHubId(s: string): boolean {
  return !path.isAbsolute(s) && !/^[.~]/.test(s) && !s.includes('\\') && s.split('@')[0].split('/').length === 2;
}

/** HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub. */
export function defaultHubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  const home = env.HF_HOME || path.join(env.XDG_CACHE_HOME || path.join(homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

const envFlag = (v: string | undefined) => v !== undefined && ['1', 'true', 'yes', 'on'].includes(v.trim().toLowerCase());

/** One resolution: the repo, where it lives in the cache, how to reach the hub. */
interface Repo {
  /** 'org/name@revision', for messages */
  label: string;
  repo: string;
  revision: string;
  /** <cache>/models--org--name */
  dir: string;
  endpoint: string;
  token: string | undefined;
  onProgress: (event: HubProgress) => void;
}

/**
 * A model directory for `nameOrDir`: the directory itself when it exists, else the cache snapshot of the hub id
 * `org/name[@revision]`, downloaded first when the network is allowed and the cache lacks it (config, generation
 * config, tokenizer files, chat template and the weights: model.safetensors, a sharded index and its shards, or
 * pytorch_model.bin). A branch or tag is checked against the hub on each call (one small request) and falls back
 * to the cached snapshot when the hub cannot be reached; a cached commit hash needs no request. HubError otherwise.
 */
export async function resolveModelSource(nameOrDir: string, options: HubOptions = {}): Promise<string> {
  if (typeof nameOrDir !== 'string' || nameOrDir === '') {
    throw new HubError(
      'HUB_ID_INVALID',
      `a model is a directory or a hub id org/name[@revision], got ${formatValue(nameOrDir, 100, 'js')}`,
    );
  }
  if (fs.existsSync(nameOrDir)) return nameOrDir;
  const id = parseHubId(nameOrDir);
  if (id === null) {
    throw new HubError(
      'HUB_ID_INVALID',
      `${formatValue(nameOrDir, 200, 'js')} is neither a directory (looked at ${path.resolve(nameOrDir)}) ` +
        'nor a hub id of the form org/name[@revision]',
    );
  }
  if (id.revision !== undefined && options.revision !== undefined && id.revision !== options.revision) {
    throw new HubError('HUB_ID_INVALID', `${nameOrDir} names revision ${id.revision} but options.revision is ${options.revision}`);
  }
  const revision = id.revision ?? options.revision ?? 'main';
  if (!validRevision(revision)) throw new HubError('HUB_ID_INVALID', `${id.repo}: malformed revision ${formatValue(revision, 100, 'js')}`);
  const cacheDir = options.cacheDir ?? defaultHubCacheDir();
  const r: Repo = {
    label: `${id.repo}@${revision}`,
    repo: id.repo,
    revision,
    dir: path.join(cacheDir, `models--${id.repo.replace('/', '--')}`),
    endpoint: (options.endpoint ?? (process.env.HF_ENDPOINT || DEFAULT_ENDPOINT)).replace(/\/+$/, ''),
    token: options.token ?? (process.env.HF_TOKEN || undefined),
    onProgress: options.onProgress ?? (() => undefined),
  };
  const cached = cachedSnapshot(r);
  const looked = `looked at ${path.resolve(nameOrDir)} (no such directory) and the cache: ${cached.why}`;
  if (options.offline ?? envFlag(process.env.HF_HUB_OFFLINE)) {
    if (cached.missing.length === 0) return cached.dir;
    throw new HubError('HUB_OFFLINE', `${r.label} is not in the Hugging Face cache and the hub is offline (HF_HUB_OFFLINE); ${looked}`);
  }
  if (COMMIT.test(revision) && cached.missing.length === 0) return cached.dir; // a commit never changes
  let info: { sha: string; files: Set<string> };
  try {
    info = await revisionInfo(r, looked);
  } catch (err) {
    if (err instanceof HubError && err.code === 'HUB_UNREACHABLE' && cached.missing.length === 0) return cached.dir;
    throw err;
  }
  return download(r, info.sha, info.files);
}

/** The cached snapshot `r.revision` points to, what it lacks to load ([] when complete), and what was looked at. */
function cachedSnapshot(r: Repo): { dir: string; missing: string[]; why: string } {
  const refFile = path.join(r.dir, 'refs', r.revision);
  let commit: string | undefined;
  if (COMMIT.test(r.revision)) commit = r.revision;
  else {
    commit = readRef(refFile);
    if (commit === undefined) return { dir: '', missing: ['everything'], why: `no ref ${refFile}` };
    if (!COMMIT.test(commit)) return { dir: '', missing: ['everything'], why: `ref ${refFile} holds no commit hash` };
  }
  const dir = path.join(r.dir, 'snapshots', commit);
  if (!fs.existsSync(dir)) return { dir, missing: ['everything'], why: `no snapshot ${dir}` };
  const missing = fs.existsSync(path.join(dir, 'config.json')) ? [] : ['config.json'];
  const weights = CHECKPOINT_FILES.find((f) => fs.existsSync(path.join(dir, f)));
  if (weights === undefined) missing.push(`weights (one of ${CHECKPOINT_FILES.join(', ')})`);
  else if (weights.endsWith('.index.json'))
    missing.push(...shardsOf(path.join(dir, weights)).filter((s) => !fs.existsSync(path.join(dir, s))));
  const partials = listDir(path.join(r.dir, 'blobs')).filter((f) => f.endsWith('.incomplete'));
  const why =
    `snapshot ${dir} lacks ${missing.join(', ')}` +
    (partials.length > 0 ? `; an interrupted download is in ${path.join(r.dir, 'blobs', partials[0])}` : '');
  return { dir, missing, why };
}

function readRef(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim();
  } catch {
    return undefined;
  }
}

function listDir(dir: string): string[] {
  try {
    return fs.readdirSync(dir);
  } catch {
    return [];
  }
}

/** The shard files a checkpoint index names (those that are plain file names; the loader refuses the rest). */
function shardsOf(indexFile: string): string[] {
  const parsed = readJsonFile(indexFile, { what: 'checkpoint index', maxBytes: FILE_SIZE_LIMITS.checkpointIndex, error: HubError });
  const map = (parsed as { weight_map?: unknown } | null)?.weight_map;
  if (map === null || typeof map !== 'object') return [];
  const shards = new Set<string>();
  for (const shard of Object.values(map)) {
    if (typeof shard === 'string' && shard === path.basename(shard) && shard !== '..' && shard !== '.' && shard !== '') shards.add(shard);
  }
  return [...shards];
}

/** fetch with the token (for the endpoint's origin only) and no content encoding (sizes and ranges are of the file). */
async function request(r: Repo, url: string, init: { method?: string; redirect?: 'manual'; range?: string } = {}): Promise<Response> {
  const headers: Record<string, string> = { 'accept-encoding': 'identity', 'user-agent': 'mexit' };
  if (r.token !== undefined && new URL(url).origin === new URL(r.endpoint).origin) headers.authorization = `Bearer ${r.token}`;
  if (init.range !== undefined) headers.range = init.range;
  try {
    return await fetch(url, { method: init.method ?? 'GET', headers, redirect: init.redirect ?? 'follow' });
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    throw new HubError(
      'HUB_UNREACHABLE',
      `${r.label}: could not reach ${url} (${cause?.code ?? cause?.message ?? (err as Error).message}); ` +
        'check HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only',
      { cause: err },
    );
  }
}

/**
 * The typed error for a failed response. For the revision request (`cached` says what the cache lacked) a 404 or 401
 * tells a missing repo from a missing revision by the hub's X-Error-Code; a file that fails is HUB_HTTP.
 */
function statusError(r: Repo, res: Response, what: string, cached?: string): HubError {
  const hubCode = res.headers.get('x-error-code');
  const status = `${res.status} ${res.statusText}`.trim();
  const gated = res.status === 401 || res.status === 403 ? ' (private or gated: set HF_TOKEN, and accept the terms on the hub)' : '';
  if (cached === undefined) return new HubError('HUB_HTTP', `${r.label}: ${what} → ${status}${gated}`);
  if (hubCode === 'RevisionNotFound') {
    return new HubError('REVISION_NOT_FOUND', `revision ${r.revision} of ${r.repo} not found on the hub (${what} → ${status}); ${cached}`);
  }
  if (hubCode === 'RepoNotFound' || res.status === 404 || res.status === 401) {
    return new HubError(
      'MODEL_NOT_FOUND',
      `${r.label} not found on the hub (${what} → ${status}); ${cached}` +
        (r.token === undefined ? '; for a private or gated repo set HF_TOKEN' : ''),
    );
  }
  return new HubError('HUB_HTTP', `${r.label}: ${what} → ${status}${gated}`);
}

/** GET /api/models/{repo}/revision/{revision}: the commit and the files of the repo at it. */
async function revisionInfo(r: Repo, cached: string): Promise<{ sha: string; files: Set<string> }> {
  const url = `${r.endpoint}/api/models/${r.repo}/revision/${encodeURIComponent(r.revision)}`;
  const res = await request(r, url);
  if (!res.ok) throw statusError(r, res, `GET ${url}`, cached);
  let body: { sha?: unknown; siblings?: unknown };
  try {
    body = (await res.json()) as typeof body;
  } catch (err) {
    throw new HubError('HUB_HTTP', `${r.label}: GET ${url} did not answer JSON`, { cause: err });
  }
  if (typeof body?.sha !== 'string' || !COMMIT.test(body.sha) || !Array.isArray(body.siblings)) {
    throw new HubError('HUB_HTTP', `${r.label}: GET ${url} answered no commit sha and file list`);
  }
  const files = new Set<string>();
  for (const s of body.siblings) if (typeof s?.rfilename === 'string') files.add(s.rfilename);
  return { sha: body.sha, files };
}

/** Fetches what snapshot `sha` lacks into the cache and returns the snapshot directory. */
async function download(r: Repo, sha: string, repoFiles: Set<string>): Promise<string> {
  const snapshot = path.join(r.dir, 'snapshots', sha);
  const weights = CHECKPOINT_FILES.find((f) => repoFiles.has(f));
  if (!repoFiles.has('config.json') || weights === undefined) {
    const lacks = repoFiles.has('config.json') ? `weights (one of ${CHECKPOINT_FILES.join(', ')})` : 'config.json';
    throw new HubError('HUB_NOT_A_MODEL', `${r.label} (commit ${sha}) has no ${lacks}; it holds ${formatValue([...repoFiles], 300, 'js')}`);
  }
  // Weights last: a snapshot whose weights are linked has everything else linked too.
  const blobs = new Map<string, string | null>();
  for (const file of [...MODEL_FILES.filter((f) => repoFiles.has(f)), weights]) blobs.set(file, await fetchBlob(r, sha, snapshot, file));
  if (weights.endsWith('.index.json')) {
    const index = blobs.get(weights) ?? path.join(snapshot, weights);
    for (const shard of shardsOf(index)) blobs.set(shard, await fetchBlob(r, sha, snapshot, shard));
  }
  for (const [file, blob] of blobs) if (blob !== null) link(r, path.join(snapshot, file), blob);
  const ref = path.join(r.dir, 'refs', r.revision);
  // written only when it moves: a complete snapshot in a read-only cache stays usable
  if (r.revision !== sha && readRef(ref) !== sha) {
    cacheWrite(r, ref, () => {
      fs.mkdirSync(path.dirname(ref), { recursive: true });
      fs.writeFileSync(`${ref}.tmp-${process.pid}`, sha);
      fs.renameSync(`${ref}.tmp-${process.pid}`, ref);
    });
  }
  return snapshot;
}

/** Typed errors for writes into the cache: HUB_CACHE_PERMISSION when it is not writable, HUB_CACHE_IO otherwise. */
function cacheError(r: Repo, target: string, err: unknown): unknown {
  const code = (err as NodeJS.ErrnoException).code;
  if (err instanceof HubError || code === undefined) return err;
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') {
    return new HubError(
      'HUB_CACHE_PERMISSION',
      `cannot write ${target} (${code}) to fetch ${r.label}: make the Hugging Face cache writable, or set HF_HUB_CACHE elsewhere`,
      { cause: err },
    );
  }
  return new HubError('HUB_CACHE_IO', `cannot write ${target} to fetch ${r.label}: ${(err as Error).message}`, { cause: err });
}

function cacheWrite<T>(r: Repo, target: string, write: () => T): T {
  try {
    return write();
  } catch (err) {
    throw cacheError(r, target, err);
  }
}

/** The snapshot entry `link` → `blob`, as a relative symlink swapped in atomically (a copy on Windows without symlink rights). */
function link(r: Repo, link: string, blob: string): void {
  const tmp = `${link}.tmp-${process.pid}`;
  cacheWrite(r, link, () => {
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.rmSync(tmp, { force: true });
    try {
      fs.symlinkSync(path.relative(path.dirname(link), blob), tmp);
    } catch (err) {
      if (process.platform !== 'win32' || (err as NodeJS.ErrnoException).code !== 'EPERM') throw err;
      fs.copyFileSync(blob, tmp);
    }
    fs.renameSync(tmp, link);
  });
}

const etagOf = (raw: string | null) => raw?.replace(/^W\//, '').replace(/^"(.*)"$/, '$1') ?? '';

/**
 * The blob of `file` at commit `sha`, downloaded unless the cache has it; null when the snapshot already links it.
 * HEAD on resolve/ (following the hub's relative redirects, not the CDN's) gives the etag and size: X-Linked-Etag /
 * X-Linked-Size for LFS files, whose body sits behind a redirect, else ETag / Content-Length.
 */
async function fetchBlob(r: Repo, sha: string, snapshot: string, file: string): Promise<string | null> {
  if (fs.existsSync(path.join(snapshot, file))) return null;
  let url = `${r.endpoint}/${r.repo}/resolve/${sha}/${file.split('/').map(encodeURIComponent).join('/')}`;
  let res = await request(r, url, { method: 'HEAD', redirect: 'manual' });
  for (let hops = 0; res.status >= 300 && res.status < 400 && /^\/(?!\/)/.test(res.headers.get('location') ?? ''); hops++) {
    if (hops === 5) throw new HubError('HUB_HTTP', `${r.label}: HEAD ${url} redirects more than 5 times`);
    url = new URL(res.headers.get('location') ?? '', url).href;
    res = await request(r, url, { method: 'HEAD', redirect: 'manual' });
  }
  const redirected = res.status >= 300 && res.status < 400 && res.headers.has('location');
  if (!res.ok && !redirected) throw statusError(r, res, `HEAD ${url}`);
  const etag = etagOf(res.headers.get('x-linked-etag') ?? res.headers.get('etag'));
  const size = Number(res.headers.get('x-linked-size') ?? res.headers.get('content-length') ?? NaN);
  if (!SAFE_ETAG.test(etag) || etag.includes('..') || !Number.isSafeInteger(size) || size < 0) {
    throw new HubError('HUB_HTTP', `${r.label}: HEAD ${url} gave no usable ETag and size (${formatValue(etag, 80, 'js')}, ${size})`);
  }
  const blob = path.join(r.dir, 'blobs', etag);
  if (fs.existsSync(blob)) return blob; // shared with another revision
  const source = redirected ? new URL(res.headers.get('location') ?? '', url).href : url;
  await downloadBlob(r, file, source, blob, size, etag);
  return blob;
}

/** Hashes the first `bytes` of `file` into `hash` (a resumed download is checked whole). */
async function hashPrefix(file: string, bytes: number, hash: Hash): Promise<void> {
  if (bytes === 0) return;
  for await (const chunk of fs.createReadStream(file, { start: 0, end: bytes - 1 })) hash.update(chunk as Buffer);
}

function sizeOf(file: string): number {
  try {
    return fs.statSync(file).size;
  } catch {
    return 0;
  }
}

/** Streams `url` into `<blob>.incomplete` (continuing what is there), checks it, renames it to `blob`. */
async function downloadBlob(r: Repo, file: string, url: string, blob: string, size: number, etag: string): Promise<void> {
  const partial = `${blob}.incomplete`;
  cacheWrite(r, path.dirname(blob), () => fs.mkdirSync(path.dirname(blob), { recursive: true }));
  let start = sizeOf(partial);
  if (start > size) start = 0;
  const res = start > 0 ? await request(r, url, { range: `bytes=${start}-` }) : await request(r, url);
  const complete = res.status === 416 && start === size;
  if (!res.ok && !complete) throw statusError(r, res, `GET ${url}`);
  if (res.status === 206 && res.headers.get('content-range')?.match(/^bytes (\d+)-/)?.[1] !== String(start)) {
    fs.rmSync(partial, { force: true });
    throw new HubError('HUB_HTTP', `${r.label}: ${url} answered ${res.headers.get('content-range')} to bytes=${start}-`);
  }
  if (res.status === 200) start = 0; // the server sent the whole file: start over
  const hash = createHash('sha256');
  await hashPrefix(partial, start, hash);
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(partial, start > 0 ? 'r+' : 'w');
  } catch (err) {
    throw cacheError(r, partial, err);
  }
  let loaded = start;
  try {
    loaded = await receive(r, file, res, partial, handle, start, size, hash);
  } catch (err) {
    if (err instanceof HubError && err.code !== 'HUB_INCOMPLETE') fs.rmSync(partial, { force: true });
    throw err;
  } finally {
    await handle.close();
  }
  if (loaded !== size) {
    throw new HubError(
      'HUB_INCOMPLETE',
      `${r.label}: ${url} ended after ${loaded} of ${size} bytes of ${file}; the next call resumes it from ${partial}`,
    );
  }
  if (SHA256.test(etag)) {
    const digest = hash.digest('hex');
    if (digest !== etag) {
      fs.rmSync(partial, { force: true });
      throw new HubError(
        'HUB_CHECKSUM',
        `${r.label}: ${file} from ${url} has sha256 ${digest}, not ${etag} as the hub says; the download was deleted`,
      );
    }
  }
  r.onProgress({ status: 'download', file, loaded, total: size });
  cacheWrite(r, blob, () => fs.renameSync(partial, blob));
}

/**
 * Writes the body of `res` at offset `start` of `handle` and into `hash`; the bytes on disk after. A broken transfer
 * is HUB_INCOMPLETE (the partial file stays, to be resumed); a body longer than announced is HUB_HTTP.
 */
async function receive(
  r: Repo,
  file: string,
  res: Response,
  partial: string,
  handle: fs.promises.FileHandle,
  start: number,
  size: number,
  hash: Hash,
): Promise<number> {
  let loaded = start;
  let reported = start;
  const step = Math.max(1, Math.floor(size / 100));
  r.onProgress({ status: 'download', file, loaded, total: size });
  if (res.status === 416 || res.body === null) return loaded;
  const reader = res.body.getReader();
  for (;;) {
    let chunk: Awaited<ReturnType<typeof reader.read>>;
    try {
      chunk = await reader.read();
    } catch (err) {
      throw new HubError(
        'HUB_INCOMPLETE',
        `${r.label}: the download of ${file} broke off at ${loaded} of ${size} bytes (${(err as Error).message}); ` +
          `the next call resumes it from ${partial}`,
        { cause: err },
      );
    }
    if (chunk.done) return loaded;
    const bytes = chunk.value;
    if (loaded + bytes.length > size) {
      await reader.cancel();
      throw new HubError(
        'HUB_HTTP',
        `${r.label}: the hub sent more than the ${size} bytes it announced for ${file}; the download was deleted`,
      );
    }
    try {
      await handle.write(bytes, 0, bytes.length, loaded);
    } catch (err) {
      throw cacheError(r, partial, err);
    }
    hash.update(bytes);
    loaded += bytes.length;
    if (loaded - reported >= step && loaded < size) {
      reported = loaded;
      r.onProgress({ status: 'download', file, loaded, total: size });
    }
  }
}
