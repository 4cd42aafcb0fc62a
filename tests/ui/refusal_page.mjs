// A refused sign-in in Debian's headless Chromium (playwright-core; never downloads a
// browser): hub -> provider form -> the hub's refusal page -> "Sign in again".
// Input: one JSON argument {hub, user, password, screenshot, userDataDir}. Output: one JSON
// line on stdout with what the page showed and where "Sign in again" led.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = {};
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  await page.goto(`${opts.hub}hub/oauth_login`);
  await page.fill("input[name=username]", opts.user);
  await page.fill("input[name=password]", opts.password);
  const [response] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/hub/oauth_callback")),
    page.click("button[type=submit]"),
  ]);
  await page.waitForLoadState("load");
  out.status = response.status();
  out.heading = (await page.textContent("h1"))?.trim();
  out.message = await page.textContent(".qustody-refusal");
  out.contact = await page.textContent(".qustody-contact");
  out.bodyText = await page.textContent("body");
  const retry = await page.$(".qustody-retry");
  out.retryVisible = retry ? await retry.isVisible() : false;
  out.retryLabel = retry ? (await retry.textContent())?.trim() : null;
  await page.screenshot({ path: opts.screenshot, fullPage: true });
  if (retry) {
    await Promise.all([page.waitForLoadState("load"), retry.click()]);
    // the provider asks again (prompt=login), even though it has a session for the user
    await page.waitForSelector("input[name=password]", { timeout: 30000 });
    out.afterRetryUrl = page.url();
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
