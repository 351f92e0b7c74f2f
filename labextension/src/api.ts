/** Calls to the server extension (/nbmodels/api/): ServerConnection adds the token and the XSRF header. */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

import { IListing } from './format';

/** What a release (unload or free) answered. */
export interface IReleaseReply {
  ok: boolean;
  released: string[];
  dry_run: boolean;
  would_free: string[];
  still_alive: { name: string; text: string; fix: string; holders: string[] }[];
  errors: Record<string, string>;
  lines: string[];
}

/** A refusal of the server or the kernel, with its one-line message. */
export class APIError extends Error {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message);
  }
}

async function call<T>(path: string, init: RequestInit = {}): Promise<T> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'nbmodels', 'api', path);
  const response = await ServerConnection.makeRequest(url, init, settings);
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    throw new APIError(response.status, body?.message ?? `${response.status} ${response.statusText}`);
  }
  return body as T;
}

export function fetchListing(): Promise<IListing> {
  return call<IListing>('kernels');
}

export interface IReleaseOptions {
  force?: boolean;
  dryRun?: boolean;
}

/** Release one model (``name``) or every model (``name`` null) of a kernel. */
export function release(
  kernelId: string,
  name: string | null,
  options: IReleaseOptions = {}
): Promise<IReleaseReply> {
  const action = name === null ? 'free' : 'unload';
  const body = { name, force: !!options.force, dry_run: !!options.dryRun };
  return call<IReleaseReply>(
    `kernels/${encodeURIComponent(kernelId)}/${action}`,
    { method: 'POST', body: JSON.stringify(body) }
  );
}
