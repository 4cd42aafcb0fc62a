// Release and collect from the instructor page in Debian's headless Chromium: sign in at
// the hub, press "Release now" for an assignment, watch the progress until it is done,
// then "Collect now", then download the collected archive through the page's link.
// Input: one JSON argument {hub, user, password, assignment, screenshot, userDataDir}.
// Output: one JSON line with what the page showed at each step and the archive (base64).
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = { seen: [] };
const row = `tr.assignment[data-assignment="${opts.assignment}"]`;
const job = async (page) => ({
  state: await page.getAttribute(`${row} td.job`, "data-state"),
  text: (await page.textContent(`${row} td.job`))?.trim(),
});
async function pressAndWait(page, pageUrl, button) {
  await Promise.all([page.waitForURL(/done=/), page.click(`${row} button.${button}`)]);
  const done = (await page.textContent("#done"))?.trim();
  for (let i = 0; i < 240; i++) {
    const now = await job(page);
    out.seen.push(now);
    if (now.state === "done" || now.state === "failed") return { done, ...now };
    await page.waitForTimeout(500);
    await page.goto(pageUrl);
  }
  return { done, ...(await job(page)) };
}
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  await page.goto(`${opts.hub}hub/login`);
  await page.fill("input[name=username]", opts.user);
  await page.fill("input[name=password]", opts.password);
  await Promise.all([page.waitForURL(/\/hub\/(home|spawn|user)/), page.click("#login_submit")]);
  const pageUrl = `${opts.hub}services/courses/`;
  out.status = (await page.goto(pageUrl)).status();
  out.buttons = await page.$$eval(`${row} button`, (b) => b.map((x) => x.textContent.trim()));
  out.release = await pressAndWait(page, pageUrl, "release");
  out.collect = await pressAndWait(page, pageUrl, "collect");
  const link = await page.getAttribute(`${row} a.download`, "href");
  out.link = link;
  const response = await page.request.get(new URL(link, opts.hub).toString());
  out.download_status = response.status();
  out.archive = (await response.body()).toString("base64");
  await page.screenshot({ path: opts.screenshot, fullPage: true });
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
