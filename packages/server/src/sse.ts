/** Server-Sent Events as OpenAI streams them: `data: {json}\n\n` per chunk, then `data: [DONE]\n\n`. */
import type { ServerResponse } from 'node:http';

export class SseWriter {
  constructor(private readonly res: ServerResponse) {}

  /** Sends the headers now, so the client sees the stream open before the first token. */
  open(): void {
    this.res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-cache',
      Connection: 'keep-alive',
      'X-Accel-Buffering': 'no', // proxies must not buffer the stream
    });
    this.res.flushHeaders();
  }

  get opened(): boolean {
    return this.res.headersSent;
  }

  send(data: unknown): void {
    if (!this.res.writableEnded && !this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }

  done(): void {
    if (this.res.writableEnded || this.res.destroyed) return;
    this.res.end('data: [DONE]\n\n');
  }
}
