// A user's JupyterLab, through the hub, shows the security alerts about them once each.
// Input: one JSON argument {hub, user, password, userDataDir, screenshot}. Output: one
// JSON line with the notices shown on the first load and after a reload.
import { hubLogin, launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir);
const out = {};
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  await hubLogin(page, opts.hub, opts.user, opts.password);

  const shown = async () => {
    const notices = page.getByText("Security notice");
    await notices.first().waitFor({ timeout: 60000 });
    await page.waitForTimeout(1000); // every notice of the answer is shown together
    return notices.allTextContents();
  };
  const asked = page.waitForResponse((r) => r.url().includes("/qustody/api/notices"), { timeout: 90000 });
  await page.goto(`${opts.hub}user/${opts.user}/lab`);
  const answer = await asked;
  out.status = answer.status();
  out.answer = await answer.text();
  try {
    out.first = await shown();
  } catch (e) {
    await page.screenshot({ path: opts.screenshot });
    throw new Error(`no notice shown; the server answered ${out.status}: ${out.answer}`);
  }
  // "What to do" opens the whole notice
  const toast = page.locator(".jp-Notification-Toast-warning", { hasText: opts.expect });
  await toast.getByText("What to do").click();
  const dialog = page.locator(".jp-Dialog");
  await dialog.waitFor({ timeout: 30000 });
  out.dialog = await dialog.locator(".jp-Dialog-body").textContent();
  await page.screenshot({ path: opts.screenshot });
  await dialog.getByText("Close").click();

  // A reload asks again and shows nothing it already showed.
  const again = page.waitForResponse((r) => r.url().includes("/qustody/api/notices"), { timeout: 90000 });
  await page.reload();
  const second = await again;
  out.againStatus = second.status();
  await page.waitForTimeout(2000);
  out.afterReload = await page.getByText("Security notice").allTextContents();
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
