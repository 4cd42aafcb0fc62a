// Drives the auditor page in Debian's headless Chromium (playwright-core; never downloads a
// browser). Input: one JSON argument {hub, user, password, filterUser, screenshot, userDataDir,
// expectDenied}. Output: one JSON line on stdout with what the page showed.
import { hubLogin, launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = {};
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  await hubLogin(page, opts.hub, opts.user, opts.password);
  const response = await page.goto(`${opts.hub}services/audit/`);
  out.status = response.status();
  if (opts.expectDenied) {
    out.text = await page.textContent("body");
    await page.screenshot({ path: opts.screenshot, fullPage: true });
  } else {
    // wait for the start-up verification to finish (the page shows its state when loaded)
    for (let i = 0; i < 60; i++) {
      const status = await page.textContent("#verify-status");
      if (status !== "running" && status !== "not run yet") break;
      await page.waitForTimeout(500);
      await page.reload();
    }
    await page.fill("#f-user", opts.filterUser);
    await Promise.all([page.waitForURL(/user=/), page.click("#apply")]);
    out.url = page.url();
    out.verifyStatus = await page.textContent("#verify-status");
    out.verifySummary = await page.textContent("#verify-summary");
    out.sessions = await page.$$eval(".session", (nodes) =>
      nodes.map((n) => ({
        user: n.dataset.user,
        types: [...n.querySelectorAll(".event")].map((e) => e.dataset.type),
        summaries: [...n.querySelectorAll(".event .summary")].map((e) => e.textContent),
      })),
    );
    out.exportHref = await page.getAttribute("#export", "href");
    const timeline = await page.$("#timeline");
    out.timelineBox = await timeline.boundingBox();
    await page.screenshot({ path: opts.screenshot, fullPage: true });
    // the export link downloads JSON lines with the same filters
    const [download] = await Promise.all([page.waitForEvent("download"), page.click("#export")]);
    out.exportName = download.suggestedFilename();
    out.exportPath = await download.path();
    const fs = await import("node:fs");
    out.exportBody = fs.readFileSync(out.exportPath, "utf8");
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
