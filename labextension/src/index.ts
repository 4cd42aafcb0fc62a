import { JupyterFrontEndPlugin } from '@jupyterlab/application';

import { clockPlugin } from './clock';
import { noticesPlugin } from './notices';
import { qpuPlugin } from './qpuPanel';
import { saveGuardPlugin } from './saveGuard';
import { secretsPlugin } from './secretsPanel';

const plugins: JupyterFrontEndPlugin<void>[] = [
  saveGuardPlugin,
  clockPlugin,
  secretsPlugin,
  qpuPlugin,
  noticesPlugin
];
export default plugins;
