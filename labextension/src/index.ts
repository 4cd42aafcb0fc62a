import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { clockPlugin } from './clock';
import { saveGuardPlugin } from './saveGuard';
import { secretsPlugin } from './secretsPanel';

const plugins: JupyterFrontEndPlugin<void>[] = [saveGuardPlugin, clockPlugin, secretsPlugin];
export default plugins;
