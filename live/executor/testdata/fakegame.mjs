// A small fake of the game for the executor's tests: the ns functions
// hvmind.js and the operation scripts call, over a few servers, with fixed
// operation times. node --experimental-websocket fakegame.mjs WS_URL runs
// the real hvmind.js in it; the Go test drives it over the broker.
import { readFileSync } from "node:fs";

// The scripts run from their source text, as the game runs a file: those
// home starts with are read from the folder above; wget replaces them.
const here = new URL("..", import.meta.url);
const source = (file) => readFileSync(new URL(file, here), "utf8");
const load = (text) => import("data:text/javascript," + encodeURIComponent(text));
const RAM = { "hvmind-hack.js": 1.7, "hvmind-grow.js": 1.75, "hvmind-weaken.js": 1.75 };
export const TIMES = { hack: 200, grow: 320, weaken: 400 };

function server(hostname, o) {
  return { hostname, hasAdminRights: false, maxRam: 0, ramUsed: 0, cpuCores: 1, moneyAvailable: 1e6, moneyMax: 2e6, hackDifficulty: 5, minDifficulty: 1, baseDifficulty: 3, serverGrowth: 10, requiredHackingSkill: 1, numOpenPortsRequired: 0, openPortCount: 0, purchasedByPlayer: false, ...o };
}

export function newGame() {
  const servers = new Map([
    ["home", server("home", { hasAdminRights: true, maxRam: 64, purchasedByPlayer: true, moneyMax: 0, moneyAvailable: 0 })],
    ["n00dles", server("n00dles", { maxRam: 4, numOpenPortsRequired: 0 })],
    ["foodnstuff", server("foodnstuff", { maxRam: 16, numOpenPortsRequired: 1 })],
    ["fortress", server("fortress", { maxRam: 32, numOpenPortsRequired: 5 })],
  ]);
  const links = { home: ["n00dles", "foodnstuff"], n00dles: ["home", "fortress"], foodnstuff: ["home"], fortress: ["n00dles"] };
  const owned = new Set(["BruteSSH.exe"]);
  const files = new Map([["home", new Map(Object.keys(RAM).map((f) => [f, source(f)]))]]);
  const ports = new Map();
  const procs = new Map();
  let nextPid = 1;
  const game = { servers, procs, ports, files, log: [], killed: false, exits: [], wgets: [] };

  function port(n) {
    if (!ports.has(n)) ports.set(n, []);
    const q = ports.get(n);
    let wake = [];
    return {
      empty: () => q.length === 0,
      read: () => q.shift(),
      tryWrite: (v) => {
        if (q.length >= 50) return false;
        q.push(v);
        for (const w of (port.waiters?.get(n) ?? [])) w();
        port.waiters?.set(n, []);
        return true;
      },
      nextWrite: () => new Promise((r) => {
        port.waiters ??= new Map();
        if (!port.waiters.has(n)) port.waiters.set(n, []);
        port.waiters.get(n).push(r);
      }),
    };
  }
  function opener(ports, program) {
    return (h) => {
      if (!owned.has(program)) throw new Error(`You do not have ${program}`);
      const s = servers.get(h);
      s.openPortCount = Math.max(s.openPortCount, ports);
    };
  }
  function live() {
    if (game.killed) throw new Error("ScriptDeath");
  }
  const ns = {
    args: process.argv.slice(2, 3),
    disableLog() {},
    getScriptName() { return "hvmind.js"; },
    read(f) { return files.get("home").get(f) ?? ""; },
    write(f, data, mode) { const home = files.get("home"); home.set(f, mode === "a" ? (home.get(f) ?? "") + data : data); },
    print(line) { game.log.push(line); console.log(line); },
    tprint(line) { game.log.push(line); console.log(line); },
    atExit(f) { game.exits.push(f); },
    getPortHandle(n) { live(); return port(n); },
    scan(h) { return [...links[h]]; },
    getServer(h) { live(); const s = servers.get(h); if (!s) throw new Error(`unknown host ${h}`); return { ...s }; },
    getPlayer() { return { money: 1000, skills: { hacking: 10 }, exp: { hacking: 100 }, mults: { hacking: 1, hacking_exp: 1, hacking_speed: 1, hacking_money: 1, hacking_grow: 1, hacking_chance: 1 } }; },
    brutessh: opener(1, "BruteSSH.exe"),
    ftpcrack: opener(2, "FTPCrack.exe"),
    relaysmtp: opener(3, "relaySMTP.exe"),
    httpworm: opener(4, "HTTPWorm.exe"),
    sqlinject: opener(5, "SQLInject.exe"),
    nuke(h) {
      const s = servers.get(h);
      if (s.openPortCount < s.numOpenPortsRequired) throw new Error(`not enough ports open on ${h}`);
      s.hasAdminRights = true;
      return true;
    },
    scp(list, dest, src) {
      if (!servers.get(dest)?.hasAdminRights) return false;
      if (!files.has(dest)) files.set(dest, new Map());
      for (const f of list) if (files.get(src).has(f)) files.get(dest).set(f, files.get(src).get(f));
      return true;
    },
    async wget(url, file, host) {
      try {
        const res = await fetch(url);
        if (!res.ok) return false;
        files.get(host ?? "home").set(file, await res.text());
        game.wgets.push(url);
        return true;
      } catch {
        return false;
      }
    },
    ps(h) { return [...procs.values()].filter((p) => p.host === h).map((p) => ({ filename: p.file, threads: p.threads, args: p.args, pid: p.pid })); },
    getHackTime() { return TIMES.hack; },
    getGrowTime() { return TIMES.grow; },
    getWeakenTime() { return TIMES.weaken; },
    exec(file, host, opts, ...args) {
      const s = servers.get(host);
      const need = RAM[file] * opts.threads;
      if (!s?.hasAdminRights || !files.get(host)?.has(file) || s.maxRam - s.ramUsed < need) return 0;
      s.ramUsed += need;
      const pid = nextPid++;
      const p = { pid, file, host, threads: opts.threads, args, temporary: opts.temporary, dead: false };
      procs.set(pid, p);
      const opNs = {
        args,
        sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
        tryWritePort: (n, v) => port(n).tryWrite(v),
      };
      const apply = (op) => async (target, o) => {
        await new Promise((r) => setTimeout(r, TIMES[op] + (o?.additionalMsec ?? 0)));
        if (p.dead) throw new Error("ScriptDeath");
        const t = servers.get(target);
        switch (op) {
          case "hack": { const stolen = 100 * p.threads; t.moneyAvailable -= stolen; t.hackDifficulty += 0.002 * p.threads; return stolen; }
          case "grow": t.moneyAvailable *= 1.5; t.hackDifficulty += 0.004 * p.threads; return 1.5;
          default: t.hackDifficulty -= 0.05 * p.threads; return 0.05 * p.threads;
        }
      };
      opNs.hack = apply("hack");
      opNs.grow = apply("grow");
      opNs.weaken = apply("weaken");
      load(files.get(host).get(file)).then((m) => m.main(opNs)).catch(() => {}).finally(() => {
        procs.delete(pid);
        if (!p.dead) s.ramUsed -= need;
      });
      return pid;
    },
    kill(pid) {
      const p = procs.get(pid);
      if (!p) return false;
      p.dead = true;
      procs.delete(pid);
      servers.get(p.host).ramUsed -= RAM[p.file] * p.threads;
      return true;
    },
  };
  game.ns = ns;
  game.nextPid = () => nextPid++;
  return game;
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split("/").pop())) {
  // argv: the broker's URL, passed as the executor's argument (empty: the
  // executor runs with none), and the executor's own URL or file (default
  // ../hvmind.js).
  const game = newGame();
  if (!process.argv[2]) game.ns.args = [];
  const executorText = process.argv[3]?.startsWith("http") ? await (await fetch(process.argv[3])).text() : source(process.argv[3] ?? "hvmind.js");
  const { main: executorMain } = await load(executorText);
  // Lines on stdin drive the fake: "kill-executor" kills the script
  // (its atExit runs), "start-executor" starts it again in the same game,
  // "state" prints the game's processes.
  const startExecutor = () => {
    game.killed = false;
    game.exits = [];
    // The executor is a process of the game, as in it.
    const pid = game.nextPid();
    game.procs.set(pid, { pid, file: "hvmind.js", host: "home", threads: 1, args: [] });
    game.ns.pid = pid;
    executorMain(game.ns).catch((e) => console.log(`executor ended: ${e?.message ?? e}`));
  };
  startExecutor();
  process.stdin.setEncoding("utf8");
  let pending = "";
  process.stdin.on("data", (chunk) => {
    pending += chunk;
    let i;
    while ((i = pending.indexOf("\n")) >= 0) {
      const cmd = pending.slice(0, i).trim();
      pending = pending.slice(i + 1);
      if (cmd === "second-executor") {
        // A second one, as a player typing the install line twice.
        const twin = { ...game.ns, pid: game.nextPid() };
        game.procs.set(twin.pid, { pid: twin.pid, file: "hvmind.js", host: "home", threads: 1, args: [] });
        executorMain(twin).then(() => { game.procs.delete(twin.pid); console.log("second executor ended"); });
      } else if (cmd === "kill-executor") {
        game.killed = true;
        game.procs.delete(game.ns.pid);
        for (const f of game.exits) f();
        console.log("executor killed");
      } else if (cmd === "start-executor") {
        startExecutor();
        console.log("executor started");
      } else if (cmd === "procs") {
        console.log(JSON.stringify([...game.procs.values()].map((p) => ({ pid: p.pid, file: p.file, host: p.host, threads: p.threads, temporary: p.temporary }))));
      } else if (cmd === "wgets") {
        console.log("wgets " + JSON.stringify(game.wgets));
      }
    }
  });
  // It runs until killed, stdin closed or not.
}
