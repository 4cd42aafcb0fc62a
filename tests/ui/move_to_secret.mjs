// "Move to a secret" in the findings dialog, in Debian's headless Chromium on a user's
// server behind a real hub: a refused save, a name the hub refuses, then two keys moved
// into secrets of the user's own and the notebook saved.
// Input: one JSON argument {server, token, keys: [k1, k2], userDataDir, screenshot}.
// Output: one JSON line.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir, {
  extraHTTPHeaders: { Authorization: `token ${opts.token}` },
});
const out = { errors: [], stores: [] };
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("response", (r) => {
    if (new URL(r.url()).pathname.endsWith("/qustody/api/secrets") && r.request().method() === "POST") {
      out.stores.push(r.status());
    }
  });
  await page.goto(`${opts.server}lab/tree/move.ipynb`);
  await page.waitForSelector(".jp-Notebook .jp-Cell .cm-content", { timeout: 120000 });
  await page.waitForFunction(() => window.jupyterapp?.commands.hasCommand("docmanager:save"));
  const themeError = page.locator('.jp-Dialog[aria-label^="Error Loading Theme"] .jp-Dialog-button');
  if (await themeError.count()) {
    await themeError.first().click();
  }
  // The user pastes two keys: a whole literal, and one inside a longer string.
  await page.evaluate(async ([k1, k2]) => {
    const nb = window.jupyterapp.shell.currentWidget;
    await nb.context.ready;
    nb.content.widgets[0].model.sharedModel.setSource(`token = "${k1}"`);
    nb.content.widgets[1].model.sharedModel.setSource(`headers = {"Authorization": "Bearer ${k2}"}`);
  }, opts.keys);
  await page.evaluate(() => void window.jupyterapp.commands.execute("docmanager:save").catch(() => {}));
  await page.waitForSelector(".jp-qustody-refusal-dialog", { timeout: 30000 });
  await page.waitForSelector(".jp-qustody-move-open", { timeout: 30000 });
  out.moveButtons = await page.locator(".jp-qustody-move-open").count();
  const rows = page.locator(".jp-qustody-finding");

  // First key: a name the hub refuses (it already reaches this server), then a good one.
  const first = rows.nth(0);
  await first.locator(".jp-qustody-move-open").click();
  out.suggested = [await first.locator(".jp-qustody-move-name").inputValue()];
  await first.locator(".jp-qustody-move-name").fill("SHARED_DEV");
  await first.locator(".jp-qustody-move-store").click();
  await page.waitForFunction(
    () => !document.querySelector(".jp-qustody-move-note")?.textContent.startsWith("Storing"),
    null, { timeout: 30000 },
  );
  await page.waitForFunction(
    () => (document.querySelector(".jp-qustody-move-note")?.textContent ?? "").length > 0
      && !document.querySelector(".jp-qustody-move-name").disabled,
    null, { timeout: 30000 },
  );
  out.refusedNote = await first.locator(".jp-qustody-move-note").textContent();
  await first.locator(".jp-qustody-move-name").fill("GITHUB_TOKEN");
  await first.locator(".jp-qustody-move-name").press("Enter");
  await first.locator(".jp-qustody-move.jp-mod-done").waitFor({ timeout: 30000 });
  out.notes = [await first.locator(".jp-qustody-move-note").textContent()];

  // Second key: the suggestion avoids the name just taken.
  const second = rows.nth(1);
  await second.locator(".jp-qustody-move-open").click();
  out.suggested.push(await second.locator(".jp-qustody-move-name").inputValue());
  await second.locator(".jp-qustody-move-store").click();
  await second.locator(".jp-qustody-move.jp-mod-done").waitFor({ timeout: 30000 }).catch(async (e) => {
    throw new Error(`${e.message}; the row says: ${await second.textContent()}`);
  });
  out.notes.push(await second.locator(".jp-qustody-move-note").textContent());
  out.dialogText = await page.textContent(".jp-qustody-refusal-dialog");
  await page.screenshot({ path: opts.screenshot });

  await page.click(".jp-qustody-refusal-dialog .jp-Dialog-button.jp-mod-reject");
  await page.waitForSelector(".jp-qustody-refusal-dialog", { state: "detached" });
  out.sources = await page.evaluate(() =>
    window.jupyterapp.shell.currentWidget.content.widgets.map((c) => c.model.sharedModel.getSource()),
  );
  out.saved = await page.evaluate(async () => {
    const nb = window.jupyterapp.shell.currentWidget;
    await window.jupyterapp.commands.execute("docmanager:save");
    return !nb.context.model.dirty;
  });
  out.dialogsAtEnd = await page.locator(".jp-Dialog").count();
  out.pageText = await page.textContent("body");
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
