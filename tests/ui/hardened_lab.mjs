// JupyterLab with the Qustody extension as users get it: in the hardened single-user
// container, behind a real hub, in Debian's headless Chromium. Only the UI is used (the
// image does not expose JupyterLab's app object): a key typed into a cell and Ctrl+S.
// Input: one JSON argument {server, token, key, userDataDir, screenshot}. Output: one JSON line.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir, {
  extraHTTPHeaders: { Authorization: `token ${opts.token}` },
});
const out = { errors: [], outside: [] };
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("request", (r) => {
    if (!/^https?:\/\/127\.0\.0\.1[:/]/.test(r.url()) && !r.url().startsWith("data:")) {
      out.outside.push(r.url());
    }
  });
  await page.goto(`${opts.server}lab/tree/panel.ipynb`);
  await page.waitForSelector(".jp-Notebook .jp-Cell .cm-content", { timeout: 120000 });
  const themeError = page.locator('.jp-Dialog[aria-label^="Error Loading Theme"] .jp-Dialog-button');
  if (await themeError.count()) {
    await themeError.first().click();
  }
  // The extension is loaded in the image's Lab: its status-bar clock and its two panels.
  await page.waitForSelector(".jp-qustody-clock:not(.lm-mod-hidden)", { timeout: 60000 });
  out.clock = await page.textContent(".jp-qustody-clock");
  await page.click('.jp-SideBar [title="Secrets on this server"]');
  await page.waitForSelector(".jp-qustody-secrets-note", { timeout: 30000 });
  out.secretsNote = await page.textContent(".jp-qustody-secrets-note");
  await page.click('.jp-SideBar [title="QPU jobs and quota"]', { timeout: 5000 }).catch(async (e) => {
    throw new Error(`${e.message.split("\n")[0]}; dialog: ${await page.locator(".jp-Dialog").first().textContent()}`);
  });
  await page.waitForSelector(".jp-qustody-qpu-note, .jp-qustody-qpu-backend", { timeout: 30000 });
  out.qpuText = await page.textContent(".jp-qustody-qpu");
  await page.click('.jp-SideBar [title="QPU jobs and quota"]'); // closed again

  // A key typed into the cell, saved with Ctrl+S: the findings dialog, not "File Save Error".
  await page.click(".jp-Notebook .jp-Cell .cm-content");
  await page.keyboard.type(`token = "${opts.key}"`);
  await page.keyboard.press("Control+s");
  await page.waitForSelector(".jp-qustody-refusal-dialog", { timeout: 30000 });
  out.findings = await page.$$eval(".jp-qustody-finding", (rows) => rows.map((r) => r.textContent));
  out.saveErrorDialogs = await page.getByText("File Save Error").count();
  out.newsPrompt = await page.getByText("official Jupyter news").count();
  await page.screenshot({ path: opts.screenshot });
  out.dialogText = await page.textContent(".jp-qustody-refusal-dialog");
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
