/** The status-bar item for the current notebook's kernel: "2 models · 1.3 GiB"; a click opens the sidebar. */
import { INotebookTracker } from '@jupyterlab/notebook';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { IKernelRecord, kernelSummary } from './format';
import { NbModelsModel } from './model';

export class ModelsStatus extends Widget {
  constructor(
    private readonly model: NbModelsModel,
    private readonly tracker: INotebookTracker | null,
    onClick: () => void
  ) {
    super();
    this.addClass('nbm-status');
    this.addClass('jp-StatusBar-TextItem');
    this.node.title = 'nbmodels: the models this notebook\'s kernel holds (click: the Models section)';
    this.node.addEventListener('click', onClick);
    model.changed.connect(this.update, this);
    tracker?.currentChanged.connect(this.update, this);
  }

  get activeStateChanged(): ISignal<this, void> {
    return this._activeStateChanged;
  }

  /** The current notebook's kernel as the server lists it, if it runs nbmodels. */
  current(): IKernelRecord | null {
    const id = this.tracker?.currentWidget?.sessionContext.session?.kernel?.id;
    if (!id || !this.model.listing) {
      return null;
    }
    return this.model.listing.kernels.find(k => k.id === id && k.nbmodels) ?? null;
  }

  isActive(): boolean {
    return this.current() !== null;
  }

  /** A current notebook exists, so the item may soon have something to say: keep polling. */
  wantsReadings(): boolean {
    return !!this.tracker?.currentWidget?.sessionContext.session?.kernel;
  }

  update(): void {
    const kernel = this.current();
    const text = kernel ? kernelSummary(kernel, this.model.listing?.gpus ?? []) : '';
    if (text !== this.node.textContent) {
      this.node.textContent = text;
    }
    const active = kernel !== null;
    if (active !== this._active) {
      this._active = active;
      this._activeStateChanged.emit();
    }
  }

  private _active = false;
  private _activeStateChanged = new Signal<this, void>(this);
}
