/**
 * Pure helpers (no JupyterLab imports, so jest runs them as they are):
 * sizes as nbmodels prints them, and what the sidebar and status bar say.
 */

/** One model as the server extension lists it. */
export interface IModelRecord {
  name: string;
  source: string;
  class_name: string;
  bytes_by_device: Record<string, number>;
  total_bytes: number;
  parameters: number | null;
  pinned: boolean;
  /** Released, but something in the kernel still holds it. */
  held: boolean;
  loading: boolean;
}

/** One kernel of this server as the server extension lists it. */
export interface IKernelRecord {
  id: string;
  kernel_name: string;
  execution_state: string;
  nbmodels: boolean;
  models: IModelRecord[];
  pid?: number;
  notebook?: string | null;
  busy?: boolean;
  idle_seconds?: number | null;
  can_release?: boolean;
  gpu?: Record<string, number>;
}

export interface IGpuRecord {
  index: number;
  label: string;
  name: string;
  total: number;
  used: number;
}

export interface IListing {
  kernels: IKernelRecord[];
  gpus: IGpuRecord[];
  gpu_note: string;
  taken_at: number;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];

/** 1536 -> "1.5 KiB", as nbmodels.core.memory.format_bytes writes it. */
export function formatBytes(nbytes: number | null | undefined): string {
  if (nbytes === null || nbytes === undefined || !Number.isFinite(nbytes)) {
    return '?';
  }
  const sign = nbytes < 0 ? '-' : '';
  let value = Math.abs(nbytes);
  for (const unit of UNITS) {
    if (value < 1024 || unit === 'TiB') {
      return unit === 'B'
        ? `${sign}${value.toFixed(0)} ${unit}`
        : `${sign}${value.toFixed(1)} ${unit}`;
    }
    value /= 1024;
  }
  return '?';
}

/** "cpu 128.0 MiB, cuda:0 1.1 GiB": a model's size on each device, largest first. */
export function deviceSizes(byDevice: Record<string, number>): string {
  return Object.entries(byDevice)
    .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
    .map(([device, n]) => `${device} ${formatBytes(n)}`)
    .join(', ');
}

/** The models that hold memory now (listed, not loading). */
function loaded(kernel: IKernelRecord): IModelRecord[] {
  return kernel.models.filter(m => !m.held && !m.loading);
}

export function totalBytes(kernel: IKernelRecord): number {
  return loaded(kernel).reduce((sum, m) => sum + m.total_bytes, 0);
}

/**
 * "2 models · 1.3 GiB", plus the kernel's GPU share ("· gpu0 24% (3.1 GiB)")
 * where NVML sees the kernel on a GPU, and "· 1 held" for released models
 * that something still holds.
 */
export function kernelSummary(kernel: IKernelRecord, gpus: IGpuRecord[] = []): string {
  const models = loaded(kernel);
  const parts = [
    `${models.length} model${models.length === 1 ? '' : 's'}`,
    formatBytes(totalBytes(kernel))
  ];
  for (const [label, used] of Object.entries(kernel.gpu ?? {}).sort()) {
    const device = gpus.find(g => g.label === label);
    const share =
      device && device.total > 0
        ? `${Math.round((100 * used) / device.total)}% (${formatBytes(used)})`
        : formatBytes(used);
    parts.push(`${label} ${share}`);
  }
  const held = kernel.models.filter(m => m.held).length;
  if (held) {
    parts.push(`${held} held`);
  }
  const loading = kernel.models.filter(m => m.loading).length;
  if (loading) {
    parts.push(`${loading} loading`);
  }
  return parts.join(' · ');
}

/** A model's row: "cpu 128.0 MiB", "released, still held", "loading…". */
export function modelDetail(model: IModelRecord): string {
  if (model.held) {
    return 'released, still held';
  }
  if (model.loading) {
    return 'loading…';
  }
  return deviceSizes(model.bytes_by_device) || formatBytes(model.total_bytes);
}

/** The last part of a path: "project/train.ipynb" -> "train.ipynb". */
export function baseName(path: string): string {
  const parts = path.split('/').filter(p => p.length > 0);
  return parts.length ? parts[parts.length - 1] : path;
}

/**
 * Merge the server's listing with the sessions the front end knows: each
 * kernel with nbmodels, its notebook's name (the session's path, else what the
 * kernel published, else its short id), sorted by notebook name.
 */
export function mergeKernels(
  listing: IListing,
  sessionPaths: Map<string, string>
): { kernel: IKernelRecord; notebook: string }[] {
  return listing.kernels
    .filter(k => k.nbmodels)
    .map(kernel => ({
      kernel,
      notebook: baseName(
        sessionPaths.get(kernel.id) ?? kernel.notebook ?? kernel.id.slice(0, 8)
      )
    }))
    .sort(
      (a, b) =>
        a.notebook.localeCompare(b.notebook) || a.kernel.id.localeCompare(b.kernel.id)
    );
}

/**
 * A cheap fingerprint of what the views show, so that a poll that finds
 * nothing new re-renders nothing.
 */
export function fingerprint(listing: IListing | null): string {
  if (!listing) {
    return '';
  }
  return JSON.stringify(
    listing.kernels.map(k => [
      k.id,
      k.nbmodels,
      k.notebook,
      k.gpu,
      k.models.map(m => [m.name, m.total_bytes, m.bytes_by_device, m.held, m.loading])
    ])
  );
}
