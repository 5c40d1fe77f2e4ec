/**
 * HVMind: one hack, landing where HVMind asked. hvmind.js starts it with
 * the job's threads; it reports its result on the executor's port.
 * args: target, job id, when the executor started it (ms), the delay that
 * lands it on time as of that start (ms), the port, and for the report:
 * the operation, its host, its threads and when it lands (ms).
 * @param {NS} ns
 */
export async function main(ns) {
  const [target, id, startedAt, delay, port, op, host, threads, landsAt] = ns.args;
  // Time spent between the executor's start and this line shortens the delay.
  const additionalMsec = Math.max(0, Math.round(delay - (Date.now() - startedAt)));
  const begun = Date.now();
  const result = await ns.hack(target, { additionalMsec });
  const msg = JSON.stringify({ id, op, host, target, threads, startedAt, landsAt, result, begun, end: Date.now() });
  // The port holds 50 messages: wait for room rather than lose a result.
  while (!ns.tryWritePort(port, msg)) await ns.sleep(100);
}
