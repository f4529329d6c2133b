/**
 * Bounded admission: at most `maxConcurrent` generations run and at most `depth` wait, in arrival order. A
 * full queue refuses at once (the caller answers 429); a waiter whose signal aborts (client gone, timeout)
 * leaves its place; close() refuses every waiter (503) while running ones keep their slots until released.
 */
export class QueueFull extends Error {}
export class QueueClosed extends Error {}

interface Waiter {
  grant: (release: () => void) => void;
  refuse: (error: Error) => void;
}

export class AdmissionQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private closed = false;

  constructor(
    readonly maxConcurrent: number,
    readonly depth: number,
    /** Called whenever the counts change (metrics). */
    private readonly onChange: (running: number, waiting: number) => void = () => {},
  ) {}

  get inFlight(): number {
    return this.running;
  }

  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with the slot's release function (call it exactly once); rejects QueueFull / QueueClosed / the signal's reason. */
  acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.closed) return Promise.reject(new QueueClosed());
    if (signal?.aborted) return Promise.reject(signal.reason);
    if (this.running < this.maxConcurrent) {
      this.running++;
      this.changed();
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.depth) return Promise.reject(new QueueFull());
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        this.changed();
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        grant: (release) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(release);
        },
        refuse: (error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(error);
        },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
      this.changed();
    });
  }

  /** Refuses all waiters and later arrivals; running slots stay until released. */
  close(): void {
    this.closed = true;
    for (const waiter of this.waiting.splice(0)) waiter.refuse(new QueueClosed());
    this.changed();
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      if (next) next.grant(this.releaser());
      else this.running--;
      this.changed();
    };
  }

  private changed(): void {
    this.onChange(this.running, this.waiting.length);
  }
}
