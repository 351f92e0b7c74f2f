/**
 * One reading of this server's kernels and their models, shared by the
 * sidebar section and the status-bar item. It polls once a second, and only
 * while one of them is on screen and the page is visible; it stops for good
 * when the server has no nbmodels extension (404), so the views degrade to
 * nothing.
 */
import { ISignal, Signal } from '@lumino/signaling';

import { fetchListing } from './api';
import { fingerprint, IListing } from './format';

export const POLL_MS = 1000;

export class NbModelsModel {
  constructor(readonly fetcher: () => Promise<IListing> = fetchListing) {}

  /** Emitted when the listing changed (or became available). */
  get changed(): ISignal<this, void> {
    return this._changed;
  }

  /** The last listing; null before the first answer, or without the server extension. */
  get listing(): IListing | null {
    return this._listing;
  }

  /** False once the server said it has no nbmodels API. */
  get available(): boolean {
    return this._available;
  }

  /** Something on screen needs fresh readings (checked before each poll). */
  addWatcher(visible: () => boolean): void {
    this._watchers.push(visible);
  }

  start(): void {
    if (this._timer === null) {
      this._timer = window.setInterval(() => void this.tick(), POLL_MS);
    }
  }

  dispose(): void {
    if (this._timer !== null) {
      window.clearInterval(this._timer);
      this._timer = null;
    }
  }

  /** Poll if anything visible wants it. */
  async tick(): Promise<void> {
    if (document.visibilityState !== 'visible') {
      return;
    }
    if (!this._watchers.some(visible => visible())) {
      return;
    }
    await this.refresh();
  }

  /** Read now (also after an action, so the row goes at once). */
  async refresh(): Promise<void> {
    if (!this._available || this._inFlight) {
      return;
    }
    this._inFlight = true;
    try {
      const listing = await this.fetcher();
      const before = fingerprint(this._listing);
      this._listing = listing;
      if (fingerprint(listing) !== before || this._first) {
        this._first = false;
        this._changed.emit();
      }
    } catch (error: any) {
      if (error?.status === 404) {
        this._available = false;
        this._listing = null;
        this.dispose();
        this._changed.emit();
      }
    } finally {
      this._inFlight = false;
    }
  }

  private _listing: IListing | null = null;
  private _available = true;
  private _first = true;
  private _inFlight = false;
  private _timer: number | null = null;
  private _watchers: (() => boolean)[] = [];
  private _changed = new Signal<this, void>(this);
}
