/**
 * Models by hub id: a Hugging Face cache built here with the real layout (blobs named by etag, snapshot symlinks,
 * refs) resolves offline, and a real HTTP server on 127.0.0.1 speaking the hub's API (revision info, HEAD/GET on
 * resolve/ with ETag, X-Linked-Etag and a redirect to a CDN path that honours Range) serves downloads into empty
 * caches: progress, checksums, resuming a broken transfer, typed errors, and ModelRuntime.load by id.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openSafetensors, writeSafetensors, type Tensor } from '@mexit/core';
import { HubError, ModelRuntime, resolveModelSource, type HubOptions, type HubProgress, type ProgressInfo } from '@mexit/model';

const GOLDEN = fileURLToPath(new URL('../../../fixtures/goldens/gpt2-tiny/', import.meta.url));
/** What a model repo holds: the golden directory (its goldens.* files stand for files mexit must skip). */
const FILES = new Map(fs.readdirSync(GOLDEN).map((f) => [f, fs.readFileSync(path.join(GOLDEN, f))]));
const MODEL_FILES = ['config.json', 'generation_config.json', 'model.safetensors'];
const SHA = 'c0ffee0000000000000000000000000000000001';
const OTHER_SHA = 'c0ffee0000000000000000000000000000000002';

const isLfs = (file: string) => file.endsWith('.safetensors');
/** The hub's etag: sha256 for LFS files, else the git blob id. */
const etagOf = (file: string, b: Buffer) =>
  isLfs(file) ? createHash('sha256').update(b).digest('hex') : createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const etag = (file: string) => etagOf(file, FILES.get(file)!);
/** Repos on the test hub: org/tiny, and org/sharded (the same weights as an index and two shards, made in beforeAll). */
const REPOS = new Map<string, Map<string, Buffer>>([['org/tiny', FILES]]);

/** gpt2-tiny's weights split in two safetensors shards with their index, as transformers' save_pretrained shards them. */
function shardedRepo(tmp: string): Map<string, Buffer> {
  const weights = openSafetensors(path.join(GOLDEN, 'model.safetensors'));
  const names = [...weights.names];
  const files = new Map(MODEL_FILES.slice(0, 2).map((f) => [f, FILES.get(f)!]));
  const weightMap: Record<string, string> = {};
  for (const [i, part] of [names.slice(0, names.length >> 1), names.slice(names.length >> 1)].entries()) {
    const shard = `model-0000${i + 1}-of-00002.safetensors`;
    const tensors: Record<string, Tensor> = {};
    for (const name of part) {
      tensors[name] = weights.get(name);
      weightMap[name] = shard;
    }
    writeSafetensors(path.join(tmp, shard), tensors);
    files.set(shard, fs.readFileSync(path.join(tmp, shard)));
  }
  files.set('model.safetensors.index.json', Buffer.from(JSON.stringify({ metadata: {}, weight_map: weightMap })));
  return files;
}

let root: string;
let n = 0;
const freshDir = () => fs.mkdtempSync(path.join(root, `cache${n++}-`));
const repoDir = (cache: string, repo = 'org/tiny') => path.join(cache, `models--${repo.replace('/', '--')}`);

/** A cache with `repo` at `commit` (the model files, or `files`) and `refs` pointing at it, as huggingface_hub writes it. */
function prepareCache(cache: string, commit: string, refs: string[], files = MODEL_FILES): void {
  const dir = repoDir(cache);
  for (const file of files) {
    const blob = path.join(dir, 'blobs', etag(file));
    fs.mkdirSync(path.dirname(blob), { recursive: true });
    fs.writeFileSync(blob, FILES.get(file)!);
    const link = path.join(dir, 'snapshots', commit, file);
    fs.mkdirSync(path.dirname(link), { recursive: true });
    fs.symlinkSync(path.relative(path.dirname(link), blob), link);
  }
  for (const ref of refs) {
    fs.mkdirSync(path.join(dir, 'refs'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'refs', ref), commit);
  }
}

interface Seen {
  method: string;
  url: string;
  range?: string;
  authorization?: string;
}

/** The hub: REPOS, each at SHA (branch main), with one-shot faults for the CDN path. */
class Hub {
  readonly seen: Seen[] = [];
  /** Serve this file's body with one byte flipped, once. */
  corruptOnce: string | undefined;
  /** Send half of this file's body, then hold the connection until cut() closes it, once. */
  cutOnce: string | undefined;
  cut: () => void = () => undefined;
  private readonly server = http.createServer((req, res) => this.handle(req, res));
  url = '';

  async start(): Promise<void> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    const { port } = this.server.address() as { port: number };
    this.url = `http://127.0.0.1:${port}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = decodeURIComponent(req.url ?? '');
    this.seen.push({ method: req.method ?? '', url, range: req.headers.range, authorization: req.headers.authorization });
    const fail = (status: number, code: string) => {
      res.writeHead(status, { 'x-error-code': code, 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: code }));
    };
    let m = url.match(/^\/api\/models\/([^/]+\/[^/]+)\/revision\/(.+)$/);
    if (m && req.method === 'GET') {
      const files = REPOS.get(m[1]);
      // the hub answers 401 for unknown repos
      if (files === undefined) fail(401, 'RepoNotFound');
      else if (m[2] !== 'main' && m[2] !== SHA) fail(404, 'RevisionNotFound');
      else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ id: m[1], sha: SHA, siblings: [...files.keys()].map((rfilename) => ({ rfilename })) }));
      }
      return;
    }
    m = url.match(/^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/);
    const body = m && (m[2] === SHA || m[2] === 'main') ? REPOS.get(m[1])?.get(m[3]) : undefined;
    if (m && body !== undefined) {
      const file = m[3];
      if (isLfs(file)) {
        res.writeHead(302, {
          location: `${this.url}/cdn/${m[1]}/${file}`,
          'x-linked-etag': `"${etagOf(file, body)}"`,
          'x-linked-size': String(body.length),
          'x-repo-commit': SHA,
        });
        res.end();
        return;
      }
      res.writeHead(200, { etag: `"${etagOf(file, body)}"`, 'content-length': body.length, 'x-repo-commit': SHA });
      res.end(req.method === 'HEAD' ? undefined : body);
      return;
    }
    m = url.match(/^\/cdn\/([^/]+\/[^/]+)\/(.+)$/);
    const cdnBody = m ? REPOS.get(m[1])?.get(m[2]) : undefined;
    if (m && cdnBody !== undefined && req.method === 'GET') this.cdn(m[2], cdnBody, req, res);
    else fail(404, 'EntryNotFound');
  }

  private cdn(file: string, body: Buffer, req: http.IncomingMessage, res: http.ServerResponse): void {
    if (this.corruptOnce === file) {
      this.corruptOnce = undefined;
      body = Buffer.from(body);
      body[body.length >> 1] ^= 0xff;
    }
    const start = Number(req.headers.range?.match(/^bytes=(\d+)-$/)?.[1] ?? 0);
    if (start > 0) {
      res.writeHead(206, { 'content-length': body.length - start, 'content-range': `bytes ${start}-${body.length - 1}/${body.length}` });
      res.end(body.subarray(start));
      return;
    }
    res.writeHead(200, { 'content-length': body.length });
    if (this.cutOnce === file) {
      this.cutOnce = undefined;
      this.cut = () => res.socket?.destroy();
      res.write(body.subarray(0, body.length >> 1));
      return;
    }
    res.end(body);
  }
}

const hub = new Hub();
beforeAll(async () => {
  root = fs.mkdtempSync(path.join(tmpdir(), 'mexit-hub-'));
  fs.chmodSync(root, 0o755); // the read-only-cache test runs as another user when run as root
  REPOS.set('org/sharded', shardedRepo(fs.mkdtempSync(path.join(root, 'shards-'))));
  await hub.start();
});
afterAll(async () => {
  await hub.close();
  fs.rmSync(root, { recursive: true, force: true });
});

/** Online options against the test hub (explicit, so the runner's own HF_* variables do not matter). */
const online = (cacheDir: string, more: HubOptions = {}): HubOptions => ({ cacheDir, endpoint: hub.url, offline: false, ...more });

async function hubError(p: Promise<unknown>): Promise<HubError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(HubError);
  return err as HubError;
}

function withEnv<T>(vars: Record<string, string | undefined>, run: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  const set = (v: Record<string, string | undefined>) => {
    for (const [k, x] of Object.entries(v)) {
      if (x === undefined) delete process.env[k];
      else process.env[k] = x;
    }
  };
  set(vars);
  return run().finally(() => set(saved));
}

/** Every entry under `dir`, relative, sorted ([] when it does not exist). */
const tree = (dir: string) => (fs.existsSync(dir) ? (fs.readdirSync(dir, { recursive: true }) as string[]).sort() : []);

function expectModelFiles(dir: string): void {
  for (const file of MODEL_FILES) {
    const link = path.join(dir, file);
    expect(fs.lstatSync(link).isSymbolicLink()).toBe(true);
    expect(fs.readlinkSync(link)).toBe(path.join('..', '..', 'blobs', etag(file)));
    expect(fs.readFileSync(link).equals(FILES.get(file)!)).toBe(true);
  }
}

describe('the cache, offline (HF_HUB_OFFLINE=1)', () => {
  it('resolves org/name, @branch and @commit to their snapshots; a directory stays itself', async () => {
    const cache = freshDir();
    prepareCache(cache, SHA, ['main']);
    prepareCache(cache, OTHER_SHA, ['v1']);
    const snapshot = (sha: string) => path.join(repoDir(cache), 'snapshots', sha);
    await withEnv({ HF_HUB_OFFLINE: '1', HF_HUB_CACHE: cache, HF_ENDPOINT: hub.url }, async () => {
      const before = hub.seen.length;
      expect(await resolveModelSource('org/tiny')).toBe(snapshot(SHA));
      expect(await resolveModelSource('org/tiny@v1')).toBe(snapshot(OTHER_SHA));
      expect(await resolveModelSource('org/tiny', { revision: 'v1' })).toBe(snapshot(OTHER_SHA));
      expect(await resolveModelSource(`org/tiny@${OTHER_SHA}`)).toBe(snapshot(OTHER_SHA));
      expect(await resolveModelSource(GOLDEN)).toBe(GOLDEN);
      expect(hub.seen.length).toBe(before); // offline never touches the network
    });
    expectModelFiles(snapshot(SHA));
  });

  it('the cache directory comes from HF_HUB_CACHE, else $HF_HOME/hub', async () => {
    const home = freshDir();
    prepareCache(path.join(home, 'hub'), SHA, ['main']);
    const dir = await withEnv({ HF_HUB_OFFLINE: '1', HF_HUB_CACHE: undefined, HF_HOME: home }, () => resolveModelSource('org/tiny'));
    expect(dir).toBe(path.join(repoDir(path.join(home, 'hub')), 'snapshots', SHA));
  });

  it('not cached: HUB_OFFLINE naming the id and the paths looked at', async () => {
    const cache = freshDir();
    const err = await hubError(resolveModelSource('org/absent', { cacheDir: cache, offline: true }));
    expect(err.code).toBe('HUB_OFFLINE');
    expect(err.message).toContain('org/absent@main');
    expect(err.message).toContain(path.join(repoDir(cache, 'org/absent'), 'refs', 'main'));
    expect(err.message).toContain(path.resolve('org/absent'));
  });

  it('a snapshot without its weights (a download that stopped) is not a model: HUB_OFFLINE saying what it lacks', async () => {
    const cache = freshDir();
    prepareCache(cache, SHA, ['main'], ['config.json']);
    const err = await hubError(resolveModelSource('org/tiny', { cacheDir: cache, offline: true }));
    expect(err.code).toBe('HUB_OFFLINE');
    expect(err.message).toContain(path.join(repoDir(cache), 'snapshots', SHA));
    expect(err.message).toContain('lacks weights');
  });

  it('malformed ids: HUB_ID_INVALID naming them', async () => {
    for (const id of ['org/na me', 'org/name@', 'org//name', 'org/na--me', 'a/b/c', 'org/name@../x', '-org/name']) {
      const err = await hubError(resolveModelSource(id, { cacheDir: freshDir(), offline: true }));
      expect(err.code, id).toBe('HUB_ID_INVALID');
      expect(err.message).toContain(id);
    }
  });
});

describe('downloads from the hub', () => {
  it('fetches the model files (and nothing else) into an empty cache, with progress, byte-identical; later calls reuse them', async () => {
    const cache = freshDir();
    const events: HubProgress[] = [];
    const first = hub.seen.length;
    const dir = await resolveModelSource('org/tiny', online(cache, { token: 'hf_secret', onProgress: (e) => events.push(e) }));
    expect(dir).toBe(path.join(repoDir(cache), 'snapshots', SHA));
    expectModelFiles(dir);
    expect(fs.readFileSync(path.join(repoDir(cache), 'refs', 'main'), 'utf8')).toBe(SHA);
    expect(tree(path.join(repoDir(cache), 'blobs'))).toEqual(MODEL_FILES.map(etag).sort());
    const requests = hub.seen.slice(first);
    expect(requests.some((s) => s.url.includes('goldens'))).toBe(false); // not model files: skipped
    expect(requests[0]).toMatchObject({ method: 'GET', url: '/api/models/org/tiny/revision/main', authorization: 'Bearer hf_secret' });
    for (const file of MODEL_FILES) {
      const mine = events.filter((e) => e.file === file);
      const total = FILES.get(file)!.length;
      expect(mine.length).toBeGreaterThanOrEqual(2);
      expect(mine[0]).toEqual({ status: 'download', file, loaded: 0, total });
      expect(mine.at(-1)).toEqual({ status: 'download', file, loaded: total, total });
      for (let i = 1; i < mine.length; i++) expect(mine[i].loaded).toBeGreaterThanOrEqual(mine[i - 1].loaded);
    }
    expect(events.filter((e) => e.file === 'model.safetensors').length).toBeGreaterThan(2); // progress between start and end

    const again = hub.seen.length;
    expect(await resolveModelSource('org/tiny', online(cache))).toBe(dir);
    // the branch is checked against the hub, no file is fetched
    expect(hub.seen.slice(again).map((s) => s.url)).toEqual(['/api/models/org/tiny/revision/main']);
    const byCommit = hub.seen.length;
    expect(await resolveModelSource(`org/tiny@${SHA}`, online(cache))).toBe(dir);
    expect(hub.seen.length).toBe(byCommit); // a cached commit needs no request
  });

  it('a body that does not match its sha256 etag is refused and leaves nothing behind; the next call gets it right', async () => {
    const cache = freshDir();
    hub.corruptOnce = 'model.safetensors';
    const err = await hubError(resolveModelSource('org/tiny', online(cache)));
    expect(err.code).toBe('HUB_CHECKSUM');
    expect(err.message).toContain('model.safetensors');
    expect(err.message).toContain(etag('model.safetensors'));
    const blobs = tree(path.join(repoDir(cache), 'blobs'));
    expect(blobs.filter((f) => f.startsWith(etag('model.safetensors')))).toEqual([]);
    expect(blobs.filter((f) => f.endsWith('.incomplete'))).toEqual([]);
    expect(tree(path.join(repoDir(cache), 'snapshots'))).toEqual([]);
    expect(tree(path.join(repoDir(cache), 'refs'))).toEqual([]);

    expectModelFiles(await resolveModelSource('org/tiny', online(cache)));
  });

  it('a transfer that breaks off half-way is HUB_INCOMPLETE; the next call resumes it with a Range request', async () => {
    const cache = freshDir();
    const file = 'model.safetensors';
    const total = FILES.get(file)!.length;
    hub.cutOnce = file;
    // the server holds the connection after half the body; close it once some of it is on disk
    const cutWhenStarted = (e: HubProgress) => {
      if (e.file === file && e.loaded > 0) hub.cut();
    };
    const err = await hubError(resolveModelSource('org/tiny', online(cache, { onProgress: cutWhenStarted })));
    expect(err.code).toBe('HUB_INCOMPLETE');
    const partial = path.join(repoDir(cache), 'blobs', `${etag(file)}.incomplete`);
    expect(err.message).toContain(partial);
    const kept = fs.statSync(partial).size;
    expect(kept).toBeGreaterThan(0);
    expect(kept).toBeLessThanOrEqual(total >> 1);
    expect(tree(path.join(repoDir(cache), 'snapshots'))).toEqual([]);
    expect(tree(path.join(repoDir(cache), 'refs'))).toEqual([]);

    const events: HubProgress[] = [];
    const before = hub.seen.length;
    const dir = await resolveModelSource('org/tiny', online(cache, { onProgress: (e) => events.push(e) }));
    expect(hub.seen.slice(before).filter((s) => s.url === `/cdn/org/tiny/${file}`)).toMatchObject([{ range: `bytes=${kept}-` }]);
    expect(events.find((e) => e.file === file)).toEqual({ status: 'download', file, loaded: kept, total });
    expectModelFiles(dir);
    expect(fs.existsSync(partial)).toBe(false);
  });

  it('an unknown revision and an unknown repo: typed errors naming them; nothing written', async () => {
    const cache = freshDir();
    const rev = await hubError(resolveModelSource('org/tiny@no-such-branch', online(cache)));
    expect(rev.code).toBe('REVISION_NOT_FOUND');
    expect(rev.message).toContain('no-such-branch');
    expect(rev.message).toContain('org/tiny');
    const repo = await hubError(resolveModelSource('org/absent', online(cache)));
    expect(repo.code).toBe('MODEL_NOT_FOUND');
    expect(repo.message).toContain('org/absent');
    expect(repo.message).toContain(path.join(repoDir(cache, 'org/absent'), 'refs', 'main'));
    expect(tree(cache)).toEqual([]);
  });

  it('an unreachable hub: HUB_UNREACHABLE naming the URL, unless the cache has the snapshot', async () => {
    const cache = freshDir();
    const down = 'http://127.0.0.1:9'; // the discard port: nothing listens there
    const err = await hubError(resolveModelSource('org/tiny', online(cache, { endpoint: down })));
    expect(err.code).toBe('HUB_UNREACHABLE');
    expect(err.message).toContain(`${down}/api/models/org/tiny/revision/main`);
    prepareCache(cache, SHA, ['main']);
    expect(await resolveModelSource('org/tiny', online(cache, { endpoint: down }))).toBe(path.join(repoDir(cache), 'snapshots', SHA));
  });

  it.skipIf(process.platform === 'win32')(
    'a cache directory without write permission: HUB_CACHE_PERMISSION naming it; one that holds the snapshot still serves it',
    async () => {
      const empty = freshDir();
      const full = freshDir();
      prepareCache(full, SHA, ['main']);
      for (const dir of [empty, full]) fs.chmodSync(dir, 0o555);
      // root writes anywhere: drop to nobody's effective uid for the calls (restored after)
      const asRoot = process.getuid?.() === 0;
      if (asRoot) process.seteuid?.(65534);
      let err: HubError;
      let dir: string;
      try {
        err = await hubError(resolveModelSource('org/tiny', online(empty)));
        dir = await resolveModelSource('org/tiny', online(full));
      } finally {
        if (asRoot) process.seteuid?.(0);
      }
      expect(err.code).toBe('HUB_CACHE_PERMISSION');
      expect(err.message).toContain(repoDir(empty));
      expect(err.message).toContain('org/tiny@main');
      expect(tree(empty)).toEqual([]);
      expect(dir).toBe(path.join(repoDir(full), 'snapshots', SHA));
    },
  );
});

describe('ModelRuntime.load by hub id', () => {
  const ids = [1, 17, 300, 42, 5, 511];
  /** Final logits at every position, as bytes. */
  async function logits(rt: ModelRuntime): Promise<Buffer> {
    const stage = await rt.stage({ from: 0, to: rt.numLayers, exits: [{ layer: rt.numLayers }] });
    const out = (await stage.run(rt.createCache(), ids)).logits[0];
    expect(out.length).toBe(ids.length * 512);
    return Buffer.from(out.buffer, out.byteOffset, out.byteLength);
  }
  let golden: ModelRuntime;
  beforeAll(async () => {
    golden = await ModelRuntime.load(GOLDEN, { threads: 1 });
  });
  afterAll(() => golden.dispose());

  /** ModelRuntime.load(id) against the test hub through the environment, into a fresh HF_HUB_CACHE. */
  async function loadFromHub(id: string, events: ProgressInfo[]): Promise<{ runtime: ModelRuntime; cache: string }> {
    const cache = freshDir();
    const env = { HF_ENDPOINT: hub.url, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: undefined, HF_TOKEN: undefined };
    const runtime = await withEnv(env, () => ModelRuntime.load(id, { threads: 1, onProgress: (e) => events.push(e) }));
    return { runtime, cache };
  }

  it('downloads through HF_ENDPOINT into HF_HUB_CACHE, reports it, and computes the logits of the golden directory', async () => {
    const events: ProgressInfo[] = [];
    const { runtime, cache } = await loadFromHub('org/tiny', events);
    try {
      expect(runtime.dir).toBe(path.join(repoDir(cache), 'snapshots', SHA));
      const downloads = events.filter((e) => e.status === 'download');
      expect(new Set(downloads.map((e) => e.file))).toEqual(new Set(MODEL_FILES));
      expect(downloads.every((e) => e.name === 'org/tiny')).toBe(true);
      expect(downloads.at(-1)).toMatchObject({ file: 'model.safetensors', loaded: FILES.get('model.safetensors')!.length });
      expect((await logits(runtime)).equals(await logits(golden))).toBe(true);
    } finally {
      await runtime.dispose();
    }
  });

  it('a sharded checkpoint: the index and every shard it names are fetched, and the logits are those of the golden directory', async () => {
    const events: ProgressInfo[] = [];
    const { runtime, cache } = await loadFromHub('org/sharded', events);
    try {
      const snapshot = path.join(repoDir(cache, 'org/sharded'), 'snapshots', SHA);
      expect(tree(snapshot)).toEqual([...REPOS.get('org/sharded')!.keys()].sort());
      expect(runtime.dir).toBe(snapshot);
      expect((await logits(runtime)).equals(await logits(golden))).toBe(true);
    } finally {
      await runtime.dispose();
    }
  });
});
