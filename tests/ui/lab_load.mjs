// Times JupyterLab page loads in Debian's headless Chromium (for benchmarks/bench_labext.py).
// Input: one JSON argument {urls: [url, ...], rounds}. Each round loads every URL once, in
// turn, in a fresh browser context (cold cache), and times navigation start to the app's
// `restored` promise. Output: one JSON line {url: [ms, ...]}.
import { chromium } from "playwright-core";

const opts = JSON.parse(process.argv[2]);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
  ],
});
const out = Object.fromEntries(opts.urls.map((u) => [u, []]));
try {
  for (let round = 0; round < opts.rounds; round++) {
    for (const url of opts.urls) {
      const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
      const page = await context.newPage();
      await page.route(/^https?:\/\/(?!127\.0\.0\.1[:/])/, (route) => route.abort());
      await page.goto(url);
      await page.waitForFunction(() => window.jupyterapp !== undefined, null, { timeout: 120000 });
      const ms = await page.evaluate(async () => {
        await window.jupyterapp.restored;
        return performance.now();
      });
      out[url].push(ms);
      await context.close();
    }
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
