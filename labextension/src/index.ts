/**
 * nbmodels in JupyterLab 4 and Notebook 7: a "Models" section in the Running
 * sidebar and a status-bar item for the current notebook's kernel, both fed
 * by the nbmodels server extension (/nbmodels/api/). Without that extension
 * (a 404 on the first reading) the plugin adds nothing.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { IRunningSessionManagers } from '@jupyterlab/running';
import { IStatusBar } from '@jupyterlab/statusbar';

import { NbModelsModel } from './model';
import { ModelsManager } from './sidebar';
import { ModelsStatus } from './status';

const RUNNING_SIDEBARS = ['jp-running-sessions', 'jp-running-sessions-tree'];

/** The Running sidebar (or Notebook 7's Running tab) is on screen. */
function runningVisible(): boolean {
  return Array.from(document.querySelectorAll<HTMLElement>('.jp-RunningSessions')).some(
    node => node.offsetParent !== null
  );
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'nbmodels:plugin',
  description: "Every kernel's models in the Running sidebar, the current kernel's in the status bar.",
  autoStart: true,
  optional: [IRunningSessionManagers, IStatusBar, INotebookTracker],
  activate: async (
    app: JupyterFrontEnd,
    managers: IRunningSessionManagers | null,
    statusBar: IStatusBar | null,
    tracker: INotebookTracker | null
  ) => {
    const model = new NbModelsModel();
    await model.refresh();
    if (!model.available) {
      console.debug('nbmodels: no server extension (/nbmodels/api/ answers 404); nothing added');
      return;
    }
    const sessions = app.serviceManager.sessions;
    const sessionPaths = (): Map<string, string> => {
      const found = new Map<string, string>();
      for (const session of sessions.running()) {
        if (session.kernel) {
          found.set(session.kernel.id, session.path);
        }
      }
      return found;
    };
    const openRunning = (): void => {
      for (const id of RUNNING_SIDEBARS) {
        app.shell.activateById(id);
      }
    };
    if (managers) {
      managers.add(
        new ModelsManager(model, sessionPaths, path => void app.commands.execute('docmanager:open', { path }))
      );
      model.addWatcher(runningVisible);
    }
    if (statusBar && tracker) {
      const item = new ModelsStatus(model, tracker, openRunning);
      statusBar.registerStatusItem('nbmodels:status', {
        item,
        align: 'left',
        rank: 5,
        isActive: () => item.isActive(),
        activeStateChanged: item.activeStateChanged
      });
      // Polls while a notebook with a kernel is current, even before the item has anything to show.
      model.addWatcher(() => item.wantsReadings());
      item.update();
    }
    sessions.runningChanged.connect(() => void model.refresh());
    model.start();
  }
};

export default plugin;
