// The instructor page in Debian's headless Chromium (playwright-core; never downloads a
// browser): sign in through the hub and the provider, read the course's roster, press
// Start for a student, wait until the page shows the server running, then press Stop.
// Input: one JSON argument {hub, user, password, student, screenshot, userDataDir}.
// Output: one JSON line on stdout with what the page showed at each step.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = {};
const rows = (page) =>
  page.$$eval("section.course", (sections) =>
    sections.map((s) => ({
      course: s.dataset.course,
      term: s.querySelector(".term")?.textContent.trim(),
      students: [...s.querySelectorAll("tr.student")].map((r) => ({
        user: r.dataset.user,
        server: r.querySelector(".server").dataset.state,
        left: r.querySelector(".left").textContent.trim(),
        jobs: r.querySelector(".jobs").textContent.trim(),
        button: r.querySelector("button")?.textContent.trim(),
      })),
    })),
  );
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  await page.goto(`${opts.hub}hub/oauth_login`);
  await page.fill("input[name=username]", opts.user);
  await page.fill("input[name=password]", opts.password);
  await Promise.all([page.waitForURL(/\/hub\//), page.click("button[type=submit]")]);
  const page_url = `${opts.hub}services/courses/`;
  const response = await page.goto(page_url);
  out.status = response.status();
  out.who = (await page.textContent("#who"))?.trim();
  out.before = await rows(page);
  const row = `tr.student[data-user="${opts.student}"]`;
  await Promise.all([page.waitForURL(/done=/), page.click(`${row} button.start`)]);
  out.done = (await page.textContent("#done"))?.trim();
  for (let i = 0; i < 240; i++) {
    if ((await page.getAttribute(`${row} .server`, "data-state")) === "running") break;
    await page.waitForTimeout(1000);
    await page.goto(page_url);
  }
  out.running = await rows(page);
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  await Promise.all([page.waitForURL(/done=/), page.click(`${row} button.stop`)]);
  for (let i = 0; i < 120; i++) {
    if ((await page.getAttribute(`${row} .server`, "data-state")) === "stopped") break;
    await page.waitForTimeout(1000);
    await page.goto(page_url);
  }
  out.after = await rows(page);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
