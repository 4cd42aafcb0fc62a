// The QPU panel of the JupyterLab extension in Debian's headless Chromium, on a user's
// server behind a real hub and gateway. The page authenticates with the user's hub token
// in a header; this script (not the page) pauses and resumes the backend and submits a
// job, as an operator and a kernel would.
// Input: one JSON argument {server, token, qpu, adminToken, heldJob, job, foreignJob,
// userDataDir, screenshot}. Output: one JSON line with what the panel showed.
import { launch, loopbackOnly } from "./browser.mjs";

const opts = JSON.parse(process.argv[2]);
const browser = await launch(opts.userDataDir, {
  extraHTTPHeaders: { Authorization: `token ${opts.token}` },
});
const out = { errors: [], pageRequests: [] };
const row = (id) => `li.jp-qustody-qpu-job[data-job-id="${id}"]`;
async function gateway(method, path, token, body) {
  const r = await fetch(opts.qpu + path, {
    method, headers: { Authorization: `token ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, body: await r.json() };
}
try {
  const page = browser.pages()[0] ?? (await browser.newPage());
  await loopbackOnly(page);
  page.on("pageerror", (e) => out.errors.push(String(e)));
  page.on("request", (r) => out.pageRequests.push(r.url()));
  await page.goto(`${opts.server}lab`);
  await page.waitForSelector(".jp-LabShell", { timeout: 120000 });
  await page.click('.jp-SideBar [title="QPU jobs and quota"]');
  await page.waitForSelector(row(opts.heldJob), { timeout: 60000 });
  out.held = await page.textContent(row(opts.heldJob));
  out.backends = await page.$$eval(".jp-qustody-qpu-backend", (items) => items.map((i) => i.textContent));
  out.quota = await page.$$eval(".jp-qustody-qpu-quota", (items) => items.map((i) => i.textContent));
  await page.screenshot({ path: opts.screenshot.replace(/\.png$/, "-held.png") });

  // Cancel from the panel: the row says so.
  await page.click(`${row(opts.heldJob)} .jp-qustody-qpu-cancel`);
  await page.waitForSelector(`${row(opts.heldJob)}[data-state="CANCELLED"]`, { timeout: 30000 });
  out.cancelled = await page.textContent(row(opts.heldJob));

  // The operator resumes; a new job goes from queued to done while the panel is open.
  out.resume = (await gateway("POST", "api/admin/backends/aer_simulator/resume", opts.adminToken,
    { reason: "test: panel" })).status;
  const submitted = await gateway("POST", "api/jobs", opts.token, opts.job);
  out.submitted = submitted.status;
  const id = submitted.body.job_id;
  out.newJob = id;
  await page.click(".jp-qustody-qpu-refresh");
  await page.waitForSelector(row(id), { timeout: 30000 });
  out.statesSeen = [await page.getAttribute(row(id), "data-state")];
  await page.waitForSelector(`${row(id)}[data-state="DONE"]`, { timeout: 120000 });
  out.done = await page.textContent(row(id));
  // A click on the job's id shows what the gateway recorded, and stays open across polls.
  await page.click(`${row(id)} .jp-qustody-qpu-job-id`);
  await page.waitForSelector(`${row(id)} .jp-qustody-qpu-decisions li`, { timeout: 30000 });
  out.provenance = await page.$$eval(`${row(id)} .jp-qustody-qpu-provenance dt`, (dts) =>
    Object.fromEntries(dts.map((dt) => [dt.textContent, dt.nextElementSibling?.textContent])),
  );
  out.decisions = await page.$$eval(`${row(id)} .jp-qustody-qpu-decisions li`, (lis) =>
    lis.map((li) => li.textContent),
  );
  await page.click(".jp-qustody-qpu-refresh");
  await page.waitForTimeout(1000);
  out.openAfterPoll = await page.locator(`${row(id)} .jp-qustody-qpu-decisions`).count();
  await page.screenshot({ path: opts.screenshot });
  // A job over the user's quota is refused by the gateway and listed with its reason.
  const over = await gateway("POST", "api/jobs", opts.token, opts.overQuotaJob);
  out.overQuota = { status: over.status, reason: over.body.reason, id: over.body.job_id };
  if (over.body.job_id) {
    await page.click(".jp-qustody-qpu-refresh");
    await page.waitForSelector(`${row(over.body.job_id)}[data-state="REJECTED"]`, { timeout: 30000 });
    out.rejected = await page.textContent(row(over.body.job_id));
    await page.screenshot({ path: opts.screenshot.replace(/\.png$/, "-rejected.png") });
  }
  // Another user's job: the server passes on the gateway's 404, whoever asks.
  const foreign = await page.evaluate(async ([server, jobId]) => {
    const r = await fetch(`${server}qustody/api/qpu/jobs/${jobId}`);
    return { status: r.status, body: await r.json() };
  }, [opts.server, opts.foreignJob]);
  out.foreign = foreign;
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out) + "\n");
