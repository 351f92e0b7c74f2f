/**
 * The Running sidebar's "Models" section: each kernel with nbmodels (its
 * notebook's name and what its models take), then its models, one row each,
 * with an Unload button per model and a Free button per kernel. A flat list
 * (kernel rows, then their model rows, indented by CSS): the sidebar gives
 * the button titles ("Unload", "Free") only to top-level rows.
 *
 * When a release leaves a model alive (something in the notebook still
 * holds it), the plan of what force would remove is fetched (a dry run) and
 * shown in a confirmation dialog; force runs only if the user confirms.
 */
import { Dialog, showDialog, showErrorMessage } from '@jupyterlab/apputils';
import { IRunningSessions } from '@jupyterlab/running';
import { circleIcon, kernelIcon } from '@jupyterlab/ui-components';
import { ISignal, Signal } from '@lumino/signaling';
import { Widget } from '@lumino/widgets';

import { APIError, IReleaseReply, release } from './api';
import { IKernelRecord, IModelRecord, kernelSummary, mergeKernels, modelDetail } from './format';
import { NbModelsModel } from './model';

export const SECTION_NAME = 'Models';

interface IRow extends IRunningSessions.IRunningItem {
  action: 'Free' | 'Unload';
}

export class ModelsManager implements IRunningSessions.IManager {
  readonly name = SECTION_NAME;
  readonly supportsMultipleViews = false;
  readonly shutdownAllLabel = 'Free All';
  readonly shutdownAllConfirmationText =
    "Release every model of every kernel listed here? Models that a notebook's variables still hold stay alive until you force them (each kernel's row).";

  constructor(
    private readonly model: NbModelsModel,
    private readonly sessionPaths: () => Map<string, string>,
    private readonly openNotebook: (path: string) => void
  ) {
    model.changed.connect(() => this._runningChanged.emit(), this);
  }

  get runningChanged(): ISignal<this, void> {
    return this._runningChanged;
  }

  shutdownLabel = (item: IRunningSessions.IRunningItem): string => (item as IRow).action ?? 'Unload';

  running(): IRunningSessions.IRunningItem[] {
    const listing = this.model.listing;
    if (!listing) {
      return [];
    }
    const paths = this.sessionPaths();
    const rows: IRow[] = [];
    for (const { kernel, notebook } of mergeKernels(listing, paths)) {
      const path = paths.get(kernel.id);
      rows.push({
        action: 'Free',
        className: 'nbm-kernel',
        context: kernel.id,
        icon: () => kernelIcon,
        label: () => notebook,
        labelTitle: () =>
          `${path ?? kernel.notebook ?? ''}\nkernel ${kernel.id} (pid ${kernel.pid ?? '?'})` +
          (kernel.busy ? '\nrunning a cell' : ''),
        detail: () => kernelSummary(kernel, listing.gpus),
        open: path ? () => this.openNotebook(path) : undefined,
        shutdown: kernel.can_release ? () => void this.free(kernel) : undefined
      });
      for (const model of kernel.models) {
        rows.push(this.modelRow(kernel, model));
      }
    }
    return rows;
  }

  private modelRow(kernel: IKernelRecord, model: IModelRecord): IRow {
    const classes = ['nbm-model'];
    if (model.held) {
      classes.push('nbm-held');
    }
    if (model.loading) {
      classes.push('nbm-loading');
    }
    return {
      action: 'Unload',
      className: classes.join(' '),
      context: `${kernel.id}/${model.name}`,
      icon: () => circleIcon,
      label: () => (model.held ? `${model.name} (held)` : model.name),
      labelTitle: () =>
        [
          model.name,
          model.source && `source: ${model.source}`,
          model.class_name && `class: ${model.class_name}`,
          model.held && 'released, but something in the notebook still holds it: Unload shows what and can force it',
          model.pinned && 'pinned'
        ]
          .filter(Boolean)
          .join('\n'),
      detail: () => modelDetail(model),
      shutdown: kernel.can_release && !model.loading ? () => void this.unload(kernel, model) : undefined
    };
  }

  refreshRunning(): void {
    void this.model.refresh();
  }

  shutdownAll(): void {
    const kernels = this.model.listing?.kernels.filter(k => k.nbmodels && k.can_release) ?? [];
    void Promise.all(kernels.map(k => release(k.id, null).catch(() => null))).then(() => this.model.refresh());
  }

  async unload(kernel: IKernelRecord, model: IModelRecord): Promise<void> {
    await this.releaseAndMaybeForce(kernel, model.name);
  }

  async free(kernel: IKernelRecord): Promise<void> {
    await this.releaseAndMaybeForce(kernel, null);
  }

  private async releaseAndMaybeForce(kernel: IKernelRecord, name: string | null): Promise<void> {
    const what = name ?? 'every model';
    try {
      const reply = await release(kernel.id, name);
      await this.model.refresh();
      if (reply.still_alive.length === 0 && Object.keys(reply.errors).length === 0) {
        return;
      }
      if (Object.keys(reply.errors).length) {
        await showErrorMessage(`Releasing ${what} failed`, Object.values(reply.errors).join('\n'));
        return;
      }
      const plan = await release(kernel.id, name, { force: true, dryRun: true });
      const result = await showDialog({
        title: `${name ?? 'Models'} still held`,
        body: planBody(reply, plan),
        buttons: [Dialog.cancelButton({ label: 'Leave it' }), Dialog.warnButton({ label: 'Force' })],
        defaultButton: 0 // Enter leaves the notebook as it is; force takes a click
      });
      if (!result.button.accept) {
        return;
      }
      const forced = await release(kernel.id, name, { force: true });
      await this.model.refresh();
      if (forced.still_alive.length) {
        await showErrorMessage(`Force could not free ${what}`, forced.still_alive.map(a => a.text).join('\n'));
      }
    } catch (error) {
      const message = error instanceof APIError ? error.message : String(error);
      await showErrorMessage(`Could not release ${what}`, message);
      await this.model.refresh();
    }
  }

  private _runningChanged = new Signal<this, void>(this);
}

/** The dialog's body: who holds what, then the plan force would run, line by line. */
function planBody(reply: IReleaseReply, plan: IReleaseReply): Widget {
  const node = document.createElement('div');
  node.className = 'nbm-plan';
  const intro = document.createElement('p');
  intro.textContent = reply.still_alive.map(a => a.text).join('\n');
  const pre = document.createElement('pre');
  pre.textContent = plan.lines.join('\n');
  const outro = document.createElement('p');
  outro.textContent = 'Force removes exactly what the plan above lists (from the notebook\'s variables), nothing else.';
  node.append(intro, pre, outro);
  return new Widget({ node });
}
