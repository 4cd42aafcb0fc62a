// Debian's headless Chromium for the UI tests (playwright-core; never downloads a browser),
// started with the flags this machine needs: no background connections, no sandbox (root).
import { chromium } from "playwright-core";

// ``extra``: more context options, e.g. {extraHTTPHeaders: {Authorization: "token ..."}}.
export async function launch(userDataDir, extra = {}) {
  return chromium.launchPersistentContext(userDataDir, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
    viewport: { width: 1280, height: 900 },
    ...extra,
  });
}

// Only loopback may be reached: a request anywhere else is a bug in the page (aborted).
export async function loopbackOnly(page) {
  await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
}

// Signs in with the hub's own login form (the shared-password login the hub tests use).
export async function hubLogin(page, hub, user, password) {
  await page.goto(`${hub}hub/login`);
  await page.fill("#username_input", user);
  await page.fill("#password_input", password);
  await Promise.all([page.waitForLoadState("load"), page.click("#login_submit")]);
}
