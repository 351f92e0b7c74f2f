/** The pieces with logic: sizes as nbmodels prints them, summaries, merging the server's readings. */
import {
  baseName,
  deviceSizes,
  fingerprint,
  formatBytes,
  IKernelRecord,
  IListing,
  IModelRecord,
  kernelSummary,
  mergeKernels,
  modelDetail
} from '../src/format';
import { NbModelsModel } from '../src/model';

const MIB = 1024 * 1024;

function model(name: string, bytes: Record<string, number>, extra: Partial<IModelRecord> = {}): IModelRecord {
  const total = Object.values(bytes).reduce((a, b) => a + b, 0);
  return {
    name,
    source: 'demo:mlp',
    class_name: 'Sequential',
    bytes_by_device: bytes,
    total_bytes: total,
    parameters: null,
    pinned: false,
    held: false,
    loading: false,
    ...extra
  };
}

function kernel(id: string, models: IModelRecord[], extra: Partial<IKernelRecord> = {}): IKernelRecord {
  return { id, kernel_name: 'python3', execution_state: 'idle', nbmodels: true, models, can_release: true, ...extra };
}

function listing(kernels: IKernelRecord[]): IListing {
  return { kernels, gpus: [], gpu_note: '', taken_at: 0 };
}

describe('formatBytes', () => {
  it('writes binary units as nbmodels.core.memory.format_bytes does', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KiB');
    expect(formatBytes(16 * MIB)).toBe('16.0 MiB');
    expect(formatBytes(1.3 * 1024 * MIB)).toBe('1.3 GiB');
    expect(formatBytes(5 * 1024 ** 5)).toBe('5120.0 TiB');
    expect(formatBytes(-2048)).toBe('-2.0 KiB');
  });

  it('says "?" for what is not a number of bytes', () => {
    expect(formatBytes(null)).toBe('?');
    expect(formatBytes(undefined)).toBe('?');
    expect(formatBytes(NaN)).toBe('?');
  });
});

describe('summaries', () => {
  it('counts loaded models and their bytes, largest device first', () => {
    const k = kernel('a', [model('enc', { cpu: 16 * MIB }), model('lm', { 'cuda:0': 1024 * MIB, cpu: 2 * MIB })]);
    expect(kernelSummary(k)).toBe('2 models · 1.0 GiB');
    expect(deviceSizes(k.models[1].bytes_by_device)).toBe('cuda:0 1.0 GiB, cpu 2.0 MiB');
    expect(kernelSummary(kernel('b', [model('enc', { cpu: MIB })]))).toBe('1 model · 1.0 MiB');
  });

  it('leaves held and loading models out of the count, and says so', () => {
    const k = kernel('a', [
      model('enc', { cpu: 4 * MIB }),
      model('old', {}, { held: true }),
      model('next', {}, { loading: true })
    ]);
    expect(kernelSummary(k)).toBe('1 model · 4.0 MiB · 1 held · 1 loading');
    expect(modelDetail(k.models[1])).toBe('released, still held');
    expect(modelDetail(k.models[2])).toBe('loading…');
  });

  it("adds the kernel's share of each GPU NVML sees it on", () => {
    const k = kernel('a', [model('lm', { 'cuda:0': 2 * 1024 * MIB })], { gpu: { gpu0: 3 * 1024 * MIB } });
    const gpus = [{ index: 0, label: 'gpu0', name: 'H100', total: 12 * 1024 * MIB, used: 5 * 1024 * MIB }];
    expect(kernelSummary(k, gpus)).toBe('1 model · 2.0 GiB · gpu0 25% (3.0 GiB)');
    expect(kernelSummary(k, [])).toBe('1 model · 2.0 GiB · gpu0 3.0 GiB');
  });
});

describe('mergeKernels', () => {
  it('names each nbmodels kernel by its session, else what it published, else its id; sorted', () => {
    const merged = mergeKernels(
      listing([
        kernel('k-eval', [], { notebook: '/home/u/project/eval.ipynb' }),
        kernel('k-train', []),
        kernel('k-plain', [], { nbmodels: false }),
        kernel('0123456789abcdef', [])
      ]),
      new Map([['k-train', 'project/train.ipynb']])
    );
    expect(merged.map(m => [m.kernel.id, m.notebook])).toEqual([
      ['0123456789abcdef', '01234567'],
      ['k-eval', 'eval.ipynb'],
      ['k-train', 'train.ipynb']
    ]);
    expect(baseName('a/b/c.ipynb')).toBe('c.ipynb');
  });
});

describe('NbModelsModel', () => {
  it('signals only when what the views show changed', async () => {
    let current = listing([kernel('a', [model('enc', { cpu: MIB })])]);
    const model_ = new NbModelsModel(async () => current);
    let changes = 0;
    model_.changed.connect(() => changes++);
    await model_.refresh();
    await model_.refresh();
    expect(changes).toBe(1);
    current = { ...listing([kernel('a', [])]), taken_at: 5 };
    await model_.refresh();
    expect(changes).toBe(2);
    expect(fingerprint(model_.listing)).toBe(fingerprint(current));
  });

  it('gives up for good on a server without the extension (404), so the views add nothing', async () => {
    let calls = 0;
    const model_ = new NbModelsModel(async () => {
      calls++;
      throw Object.assign(new Error('not found'), { status: 404 });
    });
    await model_.refresh();
    await model_.refresh();
    expect(model_.available).toBe(false);
    expect(model_.listing).toBeNull();
    expect(calls).toBe(1);
  });

  it('keeps the last reading through a passing failure', async () => {
    let fail = false;
    const model_ = new NbModelsModel(async () => {
      if (fail) {
        throw Object.assign(new Error('bad gateway'), { status: 502 });
      }
      return listing([kernel('a', [])]);
    });
    await model_.refresh();
    fail = true;
    await model_.refresh();
    expect(model_.available).toBe(true);
    expect(model_.listing?.kernels.map(k => k.id)).toEqual(['a']);
  });
});
