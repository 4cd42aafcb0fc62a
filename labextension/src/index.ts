import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { clockPlugin } from './clock';
import { saveGuardPlugin } from './saveGuard';

const plugins: JupyterFrontEndPlugin<void>[] = [saveGuardPlugin, clockPlugin];
export default plugins;
