// The secrets panel of the JupyterLab extension in Debian's headless Chromium, on a user's
// server behind a real hub. The browser authenticates with the user's hub token in a
// header (as a script would), so the test needs no login form.
// Input: one JSON argument {server, token, userDataDir, screenshot}. Output: one JSON line.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir, {
  extraHTTPHeaders: { Authorization: `token ${opts.token}` },
});
const out = { secretsResponses: [], errors: [] };
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  page.on("pageerror", (e) => out.errors.push(String(e)));
  const bodies = [];
  page.on("response", (r) => {
    if (r.url().includes("/qustody/api/secrets")) {
      bodies.push(r.text().catch(() => ""));
    }
  });
  await page.goto(`${opts.server}lab/tree/secrets.ipynb`);
  await page.waitForSelector(".jp-Notebook .jp-Cell .cm-content", { timeout: 120000 });
  await page.click('.jp-SideBar [title="Secrets on this server"]');
  await page.waitForSelector(".jp-qustody-secret", { timeout: 30000 });
  out.listed = await page.$$eval(".jp-qustody-secret", (items) =>
    items.map((i) => ({ name: i.dataset.name, text: i.textContent })),
  );
  out.note = await page.textContent(".jp-qustody-secrets-note");
  // Put the cursor at the end of the cell, then insert the first secret's call.
  await page.click(".jp-Notebook .jp-Cell .cm-content");
  await page.keyboard.press("Control+End");
  await page.click(".jp-qustody-secret-insert");
  await page.waitForFunction(() =>
    document.querySelector(".jp-Notebook .jp-Cell .cm-content")?.textContent.includes("get_secret("),
  );
  out.cellText = await page.$eval(".jp-Notebook .jp-Cell .cm-content", (e) =>
    [...e.querySelectorAll(".cm-line")].map((l) => l.textContent).join("\n"),
  );
  // Refresh asks the hub again (POST .../refresh) and lists the same names.
  const [refreshed] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/qustody/api/secrets/refresh")),
    page.click(".jp-qustody-secrets-refresh"),
  ]);
  out.refreshStatus = refreshed.status();
  await page.screenshot({ path: opts.screenshot });
  out.pageText = await page.textContent("body");
  out.secretsResponses = await Promise.all(bodies);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
