// Drives JupyterLab with the Qustody extension in Debian's headless Chromium (playwright-core;
// never downloads a browser). Input: one JSON argument {lab, token, notebook, screenshot,
// userDataDir}. Output: one JSON line on stdout with what the page showed.
import { launch } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = { requests: [], errors: [], console: [] };
const dialogs = ".jp-Dialog"; // a <dialog> element in JupyterLab 4.6
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  // Record every request the page makes; only loopback may be reached.
  page.on("request", (r) => out.requests.push(r.url()));
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("console", (m) => out.console.push(`${m.type()}: ${m.text()}`.slice(0, 500)));
  await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
  await page.goto(`${opts.lab}lab/tree/${opts.notebook}?token=${opts.token}`);
  await page.waitForSelector(".jp-Notebook .jp-Cell", { timeout: 120000 });
  await page.waitForFunction(() => window.jupyterapp?.commands.hasCommand("docmanager:save"));

  if (opts.flow === "idle") {
    // Idle first: the warning offers "keep working", which resets the idle time.
    await page.waitForSelector(".jp-qustody-clock:not(.lm-mod-hidden)", { timeout: 30000 });
    out.clock = await page.textContent(".jp-qustody-clock");
    const warning = page.getByText("if it stays idle").first();
    await warning.waitFor({ timeout: 30000 });
    out.warning = await warning.textContent();
    const [response] = await Promise.all([
      page.waitForResponse((r) => r.url().includes("/qustody/api/session/keepalive")),
      page.getByRole("button", { name: "Keep working" }).first().click(),
    ]);
    out.keepAlive = { method: response.request().method(), status: response.status(), body: await response.json() };
    await page.waitForTimeout(500);
    out.clockAfter = await page.textContent(".jp-qustody-clock");
    out.clockAfterSeconds = Number(await page.getAttribute(".jp-qustody-clock", "data-seconds-left"));
    throw Object.assign(new Error("done"), { done: true });
  }
  // The session clock, and its 2-minute warning in the notification center.
  await page.waitForSelector(".jp-qustody-clock:not(.lm-mod-hidden)", { timeout: 30000 });
  out.clock = await page.textContent(".jp-qustody-clock");
  out.clockSeconds = Number(await page.getAttribute(".jp-qustody-clock", "data-seconds-left"));
  await page.getByText("reaches its maximum age").first().waitFor({ timeout: 30000 });
  out.warning = await page.getByText("reaches its maximum age").first().textContent();
  out.newsPrompt = await page.getByText("official Jupyter news").count();

  // The secrets panel: this server (outside a hub) holds none, and says what to do.
  const secretsTab = '.jp-SideBar [title="Secrets on this server"]';
  // JupyterLab's own theme loader gives up after a few seconds on a loaded machine and
  // shows a modal error; it is not Qustody's, so it is noted and dismissed.
  const themeError = page.locator('.jp-Dialog[aria-label^="Error Loading Theme"] .jp-Dialog-button');
  if (await themeError.count()) {
    out.themeDialog = true;
    await themeError.first().click();
  }
  await page.click(secretsTab);
  await page.waitForSelector(".jp-qustody-secrets-note", { timeout: 30000 });
  out.secretsNote = await page.textContent(".jp-qustody-secrets-note");
  // Refresh is a POST from the page's cookie session: the XSRF token goes with it (a 403
  // would mean it did not); outside a hub the server cannot ask one and says so.
  const [refreshed] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/qustody/api/secrets/refresh")),
    page.click(".jp-qustody-secrets-refresh"),
  ]);
  out.secretsRefresh = { status: refreshed.status(), body: await refreshed.json() };
  await page.waitForFunction(
    () => document.querySelector(".jp-qustody-secrets-note")?.textContent.includes("refreshed"),
    null, { timeout: 30000 },
  );
  out.secretsRefreshNotice = await page.textContent(".jp-qustody-secrets-note");
  await page.click(secretsTab); // closed again

  // Make it dirty (the key is already in cell 2), then save twice at once, as an
  // autosave racing Ctrl+S does: one findings dialog, and no "File Save Error".
  out.cellCount = await page.evaluate(async () => {
    const nb = window.jupyterapp.shell.currentWidget;
    await nb.context.ready;
    nb.content.widgets[2].model.sharedModel.setSource("print('edited')\n");
    return nb.content.widgets.length;
  });
  await page.evaluate(() => {
    const c = window.jupyterapp.commands;
    void c.execute("docmanager:save").catch(() => {});
    void c.execute("docmanager:save").catch(() => {});
  });
  await page.waitForSelector(".jp-qustody-refusal-dialog", { timeout: 30000 });
  await page.waitForTimeout(1500); // room for a second dialog to appear, if one would
  out.dialogCount = await page.locator(dialogs).count();
  out.dialogTitle = await page.textContent(".jp-qustody-refusal-dialog .jp-Dialog-header");
  out.saveErrorDialogs = await page.getByText("File Save Error").count();
  out.savingStatus = await page.getByText(/^Saving (started|failed|completed)$/).first().textContent();
  out.findings = await page.$$eval(".jp-qustody-finding", (rows) =>
    rows.map((r) => ({
      cell: r.dataset.cell,
      where: r.querySelector(".jp-qustody-finding-where")?.textContent,
      rule: r.querySelector(".jp-qustody-finding-rule")?.textContent,
      masked: r.querySelector(".jp-qustody-finding-masked")?.textContent,
    })),
  );
  out.dialogText = await page.textContent(".jp-qustody-refusal-dialog");
  out.diskAtRefusal = await page.evaluate(async (token) => {
    const r = await fetch(`/api/contents/${"leak.ipynb"}?content=1`, {
      headers: { Authorization: `token ${token}` },
    });
    return (await r.json()).content.cells.map((c) => c.source);
  }, opts.token);
  await page.screenshot({ path: opts.screenshot });

  // The link closes the dialog, scrolls to the cell, makes it active and highlights it.
  await page.click(".jp-qustody-finding-where");
  await page.waitForSelector(".jp-qustody-refusal-dialog", { state: "detached" });
  out.highlighted = await page.$$eval(".jp-Notebook .jp-Cell", (cells) =>
    cells.map((c, i) => (c.classList.contains("jp-qustody-highlight") ? i : -1)).filter((i) => i >= 0),
  );
  out.activeCell = await page.evaluate(
    () => window.jupyterapp.shell.currentWidget.content.activeCellIndex,
  );

  // "Not a secret" adds the pragma to the line; the next save goes through.
  await page.evaluate(() => void window.jupyterapp.commands.execute("docmanager:save").catch(() => {}));
  await page.waitForSelector(".jp-qustody-refusal-dialog", { timeout: 30000 });
  await page.click(".jp-qustody-not-secret");
  out.notSecretLabel = await page.textContent(".jp-qustody-not-secret");
  await page.click(".jp-qustody-refusal-dialog .jp-Dialog-button.jp-mod-reject");
  await page.waitForSelector(".jp-qustody-refusal-dialog", { state: "detached" });
  out.sourceAfter = await page.evaluate(
    () => window.jupyterapp.shell.currentWidget.content.widgets[1].model.sharedModel.getSource(),
  );
  out.savedAfterPragma = await page.evaluate(async () => {
    const nb = window.jupyterapp.shell.currentWidget;
    await window.jupyterapp.commands.execute("docmanager:save");
    return !nb.context.model.dirty;
  });
  out.dialogsAtEnd = await page.locator(dialogs).count();

  // A save whose output holds a key goes through redacted: a notification says which cell,
  // and the notebook reloads so that it shows what is on disk.
  await page.evaluate(() => window.jupyterapp.commands.execute("docmanager:open", { path: "outputs.ipynb" }));
  await page.waitForFunction(() => window.jupyterapp.shell.currentWidget?.context?.path === "outputs.ipynb");
  await page.evaluate(async () => {
    const nb = window.jupyterapp.shell.currentWidget;
    await nb.context.ready;
    nb.content.widgets[0].model.sharedModel.setSource("print('again')\n");
  });
  out.outputBefore = await page.evaluate(() => window.jupyterapp.shell.currentWidget.node.querySelector(".jp-OutputArea-output")?.textContent);
  await page.evaluate(() => void window.jupyterapp.commands.execute("docmanager:save"));
  await page.getByText("redacted in cell 1").first().waitFor({ timeout: 30000 });
  out.redactedNotice = await page.getByText("redacted in cell 1").first().textContent();
  await page.waitForFunction(
    () => window.jupyterapp.shell.currentWidget.node.querySelector(".jp-OutputArea-output")?.textContent.includes("REDACTED"),
    null, { timeout: 30000 },
  );
  out.outputAfter = await page.evaluate(() => window.jupyterapp.shell.currentWidget.node.querySelector(".jp-OutputArea-output")?.textContent);
  out.sourceAfterRedaction = await page.evaluate(() => window.jupyterapp.shell.currentWidget.content.widgets[0].model.sharedModel.getSource());
  await page.screenshot({ path: opts.screenshot.replace(/\.png$/, "-redacted.png") });
} catch (e) {
  if (e.done) {
    await browser.close();
    console.log(JSON.stringify(out));
    process.exit(0);
  }
  out.failure = String(e.stack || e);
  try {
    const page = browser.pages()[0];
    out.failureText = (await page.textContent("body")).slice(0, 2000);
    out.failureDialogs = await page.$$eval(".jp-Dialog", (ds) => ds.map((d) => d.className + ": " + d.textContent.slice(0, 200)));
    await page.screenshot({ path: opts.screenshot.replace(/\.png$/, "-failure.png") });
  } catch {}
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
