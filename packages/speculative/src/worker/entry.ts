/**
 * The model worker: loads one MexitGenerator in this thread and runs the main thread's requests on it.
 * Generations overlap as they do in-process (each has its own cache; the runtime serialises stage calls).
 * An abort lands between stage calls: onnxruntime-node defers every run with setImmediate, so the abort
 * message is handled before the next run starts. The thread is never terminated from outside (that aborts
 * the process when it lands during a run): it ends itself after a failed load or a dispose.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { MexitGenerator, modelInfo, type GenerationResult } from '../generator.js';
import { toWire, type FromWorker, type ToWorker, type WorkerInit } from './protocol.js';

const port = parentPort!;
const init = workerData as WorkerInit;
const post = (message: FromWorker) => port.postMessage(message);
const running = new Map<number, AbortController>();

async function main(): Promise<void> {
  let generator: MexitGenerator;
  try {
    generator = await MexitGenerator.fromPretrained(init.model, {
      ...init.runtime,
      ...init.defaults,
      ...(init.progress && { onProgress: (info) => post({ type: 'progress', info }) }),
    });
  } catch (error) {
    post({ type: 'load-error', error: toWire(error) });
    port.close(); // nothing left to do: the thread ends by itself
    return;
  }
  port.on('message', (message: ToWorker) => {
    switch (message.type) {
      case 'generate':
        void generate(generator, message.id, message);
        break;
      case 'tokenize':
        generator.tokenize(message.prompt, message.addSpecialTokens).then(
          (ids) => post({ type: 'tokens', id: message.id, ids }),
          (error: unknown) => post({ type: 'error', id: message.id, error: toWire(error) }),
        );
        break;
      case 'abort':
        running.get(message.id)?.abort();
        break;
      case 'dispose':
        // The thread ends by itself once the sessions are released: terminating a thread while
        // onnxruntime runs in it aborts the whole process.
        for (const controller of running.values()) controller.abort();
        void generator.dispose().finally(() => port.close());
        break;
      case 'crash':
        setImmediate(() => {
          throw new Error('crash requested by the main thread');
        });
        break;
    }
  });
  post({ type: 'ready', info: modelInfo(generator.runtime) });
}

async function generate(generator: MexitGenerator, id: number, request: Extract<ToWorker, { type: 'generate' }>): Promise<void> {
  const controller = new AbortController();
  running.set(id, controller);
  try {
    const onDone = (result: GenerationResult) => post({ type: 'done', id, result });
    for await (const event of generator.events(request.prompt, { ...request.options, signal: controller.signal }, onDone)) {
      post({ type: 'event', id, event });
    }
  } catch (error) {
    post({ type: 'error', id, error: toWire(error) });
  } finally {
    running.delete(id);
  }
}

void main();
