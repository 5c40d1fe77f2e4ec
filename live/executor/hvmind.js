/**
 * hvmind.js: HVMind's executor inside Bitburner.
 *
 * It opens a WebSocket to HVMind's NATS broker and speaks NATS over it. It
 * answers what HVMind asks on hvmind.game.executor.<request>:
 *   state  the game's clock, the player, every server and the operations running;
 *   run    start one hack, grow or weaken (hvmind-<op>.js) on a host with the
 *          job's threads, delayed so that it lands at the job's landAt;
 *   kill   stop an operation before it lands (it then applies nothing).
 * Each operation's result (money stolen, grow multiplier, security removed)
 * comes back on the executor's port and is sent to hvmind.game.landed until
 * HVMind answers that it has it. It roots what the player's port openers
 * allow and copies the operation scripts to every rooted server with RAM.
 *
 * Install: wget http://<pool>/hvmind.js hvmind.js, then run hvmind.js
 * (the pool fills in its broker's address, and the executor downloads the
 * operation scripts from the pool; `run hvmind.js ws://host:port` names
 * another broker).
 *
 * Names here avoid those of the game's functions: the game charges RAM for
 * any identifier named like one.
 *
 * @param {NS} ns
 */
export async function main(ns) {
  ns.disableLog("ALL");
  // One executor a game: two would both run every operation.
  const other = ns.ps("home").find((p) => p.filename.replace(/^\//, "") === ns.getScriptName() && p.pid !== ns.pid);
  if (other) {
    ns.tprint(`hvmind: ${ns.getScriptName()} already runs (pid ${other.pid}); kill it first to start another`);
    return;
  }
  const url = String(ns.args[0] ?? BROKER_URL);
  // The operation scripts come from where this one came from.
  if (!SERVED_FROM.startsWith("__")) {
    for (const file of Object.values(OP_FILES)) {
      if (!(await ns.wget(`${SERVED_FROM}/${file}`, file, "home"))) ns.tprint(`hvmind: could not download ${SERVED_FROM}/${file}`);
    }
  }
  const ex = new Executor(ns, { url, WebSocket: globalThis.WebSocket });
  ns.atExit(() => ex.halt());
  await ex.loop();
}

/** The protocol's version, in every state reply. */
export const VERSION = 1;
/** The broker's WebSocket URL, and the HTTP address this file was served
 * from: filled in by the pool that serves it. */
const BROKER_URL = "__HVMIND_BROKER_URL__";
const SERVED_FROM = "__HVMIND_SERVED_FROM__";
/** Where the executor takes requests (hvmind.game.<game>.executor.<request>,
 * its game's own), and where it reports landings. */
export const requestsOf = (game) => `hvmind.game.${game}.executor.`;
export const LANDED = "hvmind.game.landed";
/** Where the executor says it runs, every few seconds: HVMind refuses to
 * run operations while two games' executors say so. */
export const HELLO = "hvmind.game.hello";
/** Where HVMind asks every executor to say hello now. */
export const WHO = "hvmind.game.who";
/** The port the operation scripts report on. */
export const RESULT_PORT = 7464;
/** The operation scripts, by operation. */
export const OP_FILES = { hack: "hvmind-hack.js", grow: "hvmind-grow.js", weaken: "hvmind-weaken.js" };
/** The port openers: each throws unless the player owns its program. */
const OPENERS = [(ns, h) => ns.brutessh(h), (ns, h) => ns.ftpcrack(h), (ns, h) => ns.relaysmtp(h), (ns, h) => ns.httpworm(h), (ns, h) => ns.sqlinject(h)];
/** How long a landing HVMind has confirmed is remembered (a run or kill of
 * its id is answered with it), and how often one not confirmed is sent again. */
const REMEMBER_MS = 15 * 60 * 1000;
const RESEND_MS = 1000;
/** Where the landings not yet confirmed are kept on home, so that an
 * executor killed and started again sends them. */
export const LANDINGS_FILE = "hvmind-landings.txt";
/** The game's id, made at the first start and kept on home: HVMind sends
 * its requests to one game, however many are connected. */
export const GAME_FILE = "hvmind-game.txt";
/** An operation this close to its landing is not killed: it may have
 * applied already, its report not yet read. */
const KILL_MARGIN_MS = 50;
const ROOT_EVERY_MS = 10 * 1000;
const HELLO_EVERY_MS = 2 * 1000;

/**
 * Executor runs HVMind's operations in the game. ns is the game's (or a
 * test's); cfg: url, WebSocket (the class), port, log.
 */
export class Executor {
  constructor(ns, cfg) {
    this.ns = ns;
    this.port = cfg.port ?? RESULT_PORT;
    /** Operations running, by job id. */
    this.ops = new Map();
    /** Landings not yet confirmed by HVMind, by job id. */
    this.unconfirmed = new Map();
    /** Landings confirmed, by job id: {landing, at}. */
    this.confirmed = new Map();
    /** Hosts the operation scripts were copied to. */
    this.copied = new Set();
    this.halted = false;
    this.lastRoot = 0;
    this.lastHello = 0;
    this.instance = token();
    this.game = this.gameId();
    this.requests = requestsOf(this.game);
    this.since = Date.now();
    this.loadLandings();
    this.link = new NatsLink(cfg.url, {
      WebSocket: cfg.WebSocket,
      name: "hvmind-executor",
      subjects: [this.requests + "*", WHO],
      onMessage: (subject, reply, data) => this.answer(subject, reply, data),
      log: (line, loud) => this.note(line, loud),
    });
  }

  note(line, loud) {
    try {
      if (loud) this.ns.tprint(`hvmind: ${line}`);
      else this.ns.print(line);
    } catch {
      // killed: nothing to print to
    }
  }

  /** gameId is this game's id, made and kept on home at the first start. */
  gameId() {
    let id = "";
    try {
      id = String(this.ns.read(GAME_FILE) ?? "").trim();
    } catch {
      id = "";
    }
    if (!/^[A-Za-z0-9]{8,}$/.test(id)) {
      id = token();
      this.ns.write(GAME_FILE, id, "w");
    }
    return id;
  }

  /** loadLandings reads the landings a previous executor had not had confirmed. */
  loadLandings() {
    let saved = [];
    try {
      const text = this.ns.read(LANDINGS_FILE);
      if (text) saved = JSON.parse(text);
    } catch {
      saved = [];
    }
    for (const l of saved) {
      l.sentAt = 0;
      this.unconfirmed.set(l.id, l);
    }
    if (saved.length > 0) this.note(`${saved.length} landings to report from before`);
  }

  /** saveLandings keeps the unconfirmed landings on home. */
  saveLandings() {
    try {
      this.ns.write(LANDINGS_FILE, JSON.stringify([...this.unconfirmed.values()]), "w");
    } catch {
      // killed
    }
  }

  /** drain takes every report off the port. */
  drain() {
    const handle = this.ns.getPortHandle(this.port);
    while (!handle.empty()) this.landed(handle.read());
  }

  /** halt closes the connection; loop returns. */
  halt() {
    this.halted = true;
    // A next executor of this game is not taken for a second one.
    this.link.publish(HELLO, JSON.stringify({ game: this.game, instance: this.instance, since: this.since, now: Date.now(), bye: true }));
    this.link.shut();
  }

  /** loop runs until the script is killed. */
  async loop() {
    this.recover();
    this.link.begin();
    while (!this.halted) {
      // An ns call every turn: once the script is killed it throws, and
      // the loop ends with it.
      const handle = this.ns.getPortHandle(this.port);
      this.drain();
      const now = Date.now();
      if (now - this.lastRoot >= ROOT_EVERY_MS) {
        this.lastRoot = now;
        this.rootAll();
      }
      this.resend(now);
      this.link.keepAlive(now);
      if (this.link.ready && now - this.lastHello >= HELLO_EVERY_MS) {
        this.lastHello = now;
        this.link.publish(HELLO, JSON.stringify({ game: this.game, instance: this.instance, since: this.since, now }));
      }
      await Promise.race([handle.nextWrite(), pause(250)]);
    }
  }

  /** servers lists every server reachable from home, home first. */
  servers() {
    const seen = new Set(["home"]);
    const order = ["home"];
    for (let i = 0; i < order.length; i++) {
      for (const next of this.ns.scan(order[i])) {
        if (!seen.has(next)) {
          seen.add(next);
          order.push(next);
        }
      }
    }
    return order;
  }

  /** rootAll opens what ports it can and nukes, then copies the scripts. */
  rootAll() {
    for (const host of this.servers()) {
      let s = this.ns.getServer(host);
      if (!s.hasAdminRights) {
        for (const opener of OPENERS) {
          try {
            opener(this.ns, host);
          } catch {
            // not owned yet
          }
        }
        try {
          this.ns.nuke(host);
          this.note(`rooted ${host}`);
        } catch {
          // not enough ports open
        }
        s = this.ns.getServer(host);
      }
      if (s.hasAdminRights && s.maxRam > 0) this.copyTo(host);
    }
  }

  copyTo(host) {
    if (host === "home" || this.copied.has(host)) return true;
    const ok = this.ns.scp(Object.values(OP_FILES), host, "home");
    if (ok) this.copied.add(host);
    return ok;
  }

  /** recover takes up the operations a previous executor started. */
  recover() {
    const files = new Map(Object.entries(OP_FILES).map(([op, f]) => [f, op]));
    for (const host of this.servers()) {
      if (!this.ns.getServer(host).hasAdminRights) continue;
      for (const p of this.ns.ps(host)) {
        const op = files.get(p.filename.replace(/^\//, ""));
        if (!op) continue;
        const [target, id, startedAt, delay, , , , , landsAt] = p.args;
        const durationMs = Math.max(0, (landsAt ?? 0) - startedAt - delay);
        this.ops.set(String(id), { id: String(id), op, host, target, threads: p.threads, pid: p.pid, startedAt, durationMs, delayMs: delay, landsAt: landsAt ?? 0 });
      }
    }
    if (this.ops.size > 0) this.note(`took up ${this.ops.size} operations still running`);
  }

  /** answer serves one request. */
  answer(subject, reply, data) {
    if (subject === WHO) {
      this.lastHello = 0; // said at the loop's next turn
      return;
    }
    if (!reply) return;
    let out;
    try {
      const req = data ? JSON.parse(data) : {};
      switch (subject.slice(this.requests.length)) {
        case "state":
          out = this.state();
          break;
        case "run":
          out = this.start(req);
          break;
        case "kill":
          out = this.stop(req);
          break;
        default:
          out = { error: `unknown request ${subject}` };
      }
    } catch (e) {
      out = { error: String(e?.message ?? e) };
    }
    this.link.publish(reply, JSON.stringify(out));
  }

  /** state is the game as it is now: now is when the request came, and
   * took how long the answer took to make (HVMind takes it off the round
   * trip when it compares the clocks). */
  state() {
    const now = Date.now();
    const servers = this.servers().map((h) => this.ns.getServer(h));
    // Only what HVMind reads: the whole player object names deprecated
    // properties, and the game warns of each once a session.
    const p = this.ns.getPlayer();
    const player = { money: p.money, skills: { hacking: p.skills.hacking }, exp: { hacking: p.exp.hacking }, mults: p.mults };
    return { version: VERSION, game: this.game, instance: this.instance, now, took: Date.now() - now, player, servers, ops: [...this.ops.values()], port: this.port };
  }

  /** start runs an operation: req {id, op, host, target, threads, landAt}. */
  start(req) {
    const id = String(req.id ?? "");
    if (!id) return { error: "run: no id" };
    const running = this.ops.get(id);
    if (running) return { ...running, already: true };
    const done = this.unconfirmed.get(id) ?? this.confirmed.get(id)?.landing;
    if (done) return { id, landed: done };
    const file = OP_FILES[req.op];
    if (!file) return { error: `run ${id}: unknown operation ${req.op}` };
    const threads = Math.floor(Number(req.threads));
    if (!(threads >= 1)) return { error: `run ${id}: threads must be a positive whole number (got ${req.threads})` };
    const host = String(req.host ?? "");
    const target = String(req.target ?? "");
    if (!this.copyTo(host)) return { error: `run ${id}: cannot copy ${file} to ${host}` };
    const durationMs = req.op === "hack" ? this.ns.getHackTime(target) : req.op === "grow" ? this.ns.getGrowTime(target) : this.ns.getWeakenTime(target);
    // The target and the player as the operation starts: its time is fixed
    // from them, and HVMind checks its batches with them.
    const at = this.ns.getServer(target);
    const levelAtStart = this.ns.getPlayer().skills.hacking;
    const startedAt = Date.now();
    const delayMs = req.landAt > 0 ? Math.max(0, req.landAt - startedAt - durationMs) : 0;
    const landsAt = startedAt + durationMs + delayMs;
    const pid = this.ns.exec(file, host, { threads, temporary: true }, target, id, startedAt, delayMs, this.port, req.op, host, threads, landsAt);
    if (!pid) {
      this.copied.delete(host); // copied again next time, in case it was deleted
      return { error: `run ${id}: the game did not start ${file} on ${host} with ${threads} threads (no root, or not enough free RAM)` };
    }
    const op = { id, op: req.op, host, target, threads, pid, startedAt, durationMs, delayMs, landsAt, securityAtStart: at.hackDifficulty, moneyAtStart: at.moneyAvailable, levelAtStart };
    this.ops.set(id, op);
    return op;
  }

  /** stop kills an operation before it lands: req {id}. It answers with
   * the landing when there is one, pending when the operation is too close
   * to its landing to know (ask again), killed, unknown (never run here),
   * or gone (its script ended without a report: never applied). */
  stop(req) {
    const id = String(req.id ?? "");
    this.drain(); // a report waiting on the port is a landing
    const done = this.unconfirmed.get(id) ?? this.confirmed.get(id)?.landing;
    if (done) return { id, landed: done };
    const op = this.ops.get(id);
    if (!op) return { id, unknown: true };
    const running = this.ns.ps(op.host).some((p) => p.pid === op.pid);
    if (running && op.landsAt > 0 && Date.now() >= op.landsAt - KILL_MARGIN_MS) return { id, pending: true };
    if (running && this.ns.kill(op.pid)) {
      this.ops.delete(id);
      return { id, killed: true };
    }
    // Not running: its report, if it made one, is on the port by now.
    this.drain();
    const late = this.unconfirmed.get(id);
    if (late) return { id, landed: late };
    this.ops.delete(id);
    return { id, gone: true };
  }

  /** landed takes an operation script's report off the port. */
  landed(text) {
    let r;
    try {
      r = JSON.parse(text);
    } catch {
      this.note(`ignored a message on port ${this.port}: ${text}`);
      return;
    }
    const id = String(r.id);
    const known = this.ops.get(id) ?? {};
    this.ops.delete(id);
    // The script's own report says what it was; what the executor knew
    // (its pid, its time) fills the rest.
    const op = { ...known, id, op: r.op ?? known.op, host: r.host ?? known.host, target: r.target ?? known.target, threads: r.threads ?? known.threads };
    if (r.startedAt) op.startedAt = r.startedAt;
    if (r.landsAt) op.landsAt = r.landsAt;
    const landing = { ...op, game: this.game, result: r.result, begun: r.begun, landedAt: r.end, after: op.target ? this.ns.getServer(op.target) : undefined };
    this.unconfirmed.set(id, landing);
    this.saveLandings();
    this.send(landing);
  }

  send(landing) {
    landing.sentAt = Date.now();
    this.link
      .request(LANDED, JSON.stringify(landing), 5000)
      .then(() => {
        if (!this.unconfirmed.delete(landing.id)) return;
        this.confirmed.set(landing.id, { landing, at: Date.now() });
        this.saveLandings();
      })
      .catch(() => {
        // sent again by resend
      });
  }

  resend(now) {
    for (const landing of this.unconfirmed.values()) {
      if (now - landing.sentAt >= RESEND_MS) this.send(landing);
    }
    for (const [id, c] of this.confirmed) {
      if (now - c.at > REMEMBER_MS) this.confirmed.delete(id);
    }
  }
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** pubFrame is a NATS PUB of data (text) on subject, with a reply subject when given. */
function pubFrame(subject, reply, data) {
  const bytes = encoder.encode(data ?? "");
  const head = encoder.encode(`PUB ${subject} ${reply ? reply + " " : ""}${bytes.length}\r\n`);
  const frame = new Uint8Array(head.length + bytes.length + 2);
  frame.set(head, 0);
  frame.set(bytes, head.length);
  frame.set([13, 10], head.length + bytes.length);
  return frame;
}

function pause(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function token() {
  let s = "";
  for (let i = 0; i < 22; i++) s += "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"[Math.floor(Math.random() * 62)];
  return s;
}

/**
 * NatsLink is a NATS client over one WebSocket, made again whenever it
 * closes: it subscribes to opts.subjects, delivers their messages to
 * opts.onMessage(subject, reply, data), publishes, and makes requests.
 */
export class NatsLink {
  constructor(url, opts) {
    this.url = url;
    this.opts = opts;
    this.inbox = "_INBOX." + token();
    this.requests = new Map();
    this.nextRequest = 0;
    this.socket = null;
    this.ready = false;
    this.shutDown = false;
    this.wait = 250;
    this.pingAt = 0;
    this.pongDue = 0;
    this.buf = new Uint8Array(0);
    this.need = null;
  }

  log(line, loud) {
    this.opts.log?.(line, loud);
  }

  /** begin opens the connection, and keeps it open until shut. */
  begin() {
    if (this.shutDown) return;
    let socket;
    try {
      socket = new this.opts.WebSocket(this.url);
    } catch (e) {
      this.log(`cannot open ${this.url}: ${e?.message ?? e}`);
      this.again();
      return;
    }
    socket.binaryType = "arraybuffer";
    this.socket = socket;
    this.ready = false;
    this.greeted = false;
    this.buf = new Uint8Array(0);
    this.need = null;
    socket.onmessage = (ev) => {
      if (socket !== this.socket) return;
      this.feed(typeof ev.data === "string" ? encoder.encode(ev.data) : new Uint8Array(ev.data));
    };
    // A browser fires close after error; node's WebSocket, when it could
    // not connect, fires only error.
    const dropped = () => {
      if (socket !== this.socket) return;
      this.socket = null;
      try {
        socket.close();
      } catch {
        // closed already
      }
      if (this.ready) this.log(`lost the broker at ${this.url}; connecting again`, true);
      this.ready = false;
      this.again();
    };
    socket.onclose = dropped;
    socket.onerror = dropped;
  }

  again() {
    if (this.shutDown) return;
    const wait = this.wait;
    this.wait = Math.min(this.wait * 2, 5000);
    setTimeout(() => this.begin(), wait);
  }

  shut() {
    this.shutDown = true;
    try {
      this.socket?.close();
    } catch {
      // closed already
    }
    this.socket = null;
  }

  /** keepAlive pings every 5 s and drops a connection silent for 10 s. */
  keepAlive(now) {
    if (!this.ready) return;
    if (this.pongDue && now > this.pongDue) {
      this.log("the broker stopped answering; connecting again", true);
      this.pongDue = 0;
      const socket = this.socket;
      this.socket = null;
      this.ready = false;
      try {
        socket?.close();
      } catch {
        // closed already
      }
      this.again();
      return;
    }
    if (now - this.pingAt >= 5000) {
      this.pingAt = now;
      if (!this.pongDue) this.pongDue = now + 10000;
      this.write("PING\r\n");
    }
  }

  write(text) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(encoder.encode(text));
    return true;
  }

  publish(subject, data) {
    if (!this.socket || this.socket.readyState !== 1) return false;
    this.socket.send(pubFrame(subject, "", data));
    return true;
  }

  /** request publishes with a reply subject and resolves with the reply's data. */
  request(subject, data, timeoutMs) {
    return new Promise((resolve, reject) => {
      if (!this.ready) {
        reject(new Error("not connected"));
        return;
      }
      const reply = `${this.inbox}.${++this.nextRequest}`;
      const timer = setTimeout(() => {
        this.requests.delete(reply);
        reject(new Error("timeout"));
      }, timeoutMs);
      this.requests.set(reply, (answer) => {
        clearTimeout(timer);
        resolve(answer);
      });
      this.socket.send(pubFrame(subject, reply, data));
    });
  }

  /** feed parses what the broker sent. */
  feed(chunk) {
    const joined = new Uint8Array(this.buf.length + chunk.length);
    joined.set(this.buf, 0);
    joined.set(chunk, this.buf.length);
    this.buf = joined;
    for (;;) {
      if (this.need) {
        if (this.buf.length < this.need.size + 2) return;
        const data = decoder.decode(this.buf.subarray(0, this.need.size));
        this.buf = this.buf.subarray(this.need.size + 2);
        const m = this.need;
        this.need = null;
        this.deliver(m.subject, m.reply, data);
        continue;
      }
      let end = -1;
      for (let i = 0; i + 1 < this.buf.length; i++) {
        if (this.buf[i] === 13 && this.buf[i + 1] === 10) {
          end = i;
          break;
        }
      }
      if (end < 0) return;
      const line = decoder.decode(this.buf.subarray(0, end));
      this.buf = this.buf.subarray(end + 2);
      this.control(line);
    }
  }

  control(line) {
    const space = line.indexOf(" ");
    const verb = (space < 0 ? line : line.slice(0, space)).toUpperCase();
    switch (verb) {
      case "MSG": {
        const p = line.split(" ").filter((x) => x !== "");
        this.need = { subject: p[1], reply: p.length === 5 ? p[3] : "", size: Number(p[p.length - 1]) };
        break;
      }
      case "PING":
        this.write("PONG\r\n");
        break;
      case "PONG":
        this.pongDue = 0;
        if (!this.ready) {
          this.ready = true;
          this.wait = 250;
          this.log(`connected to the broker at ${this.url}`, true);
        }
        break;
      case "INFO":
        if (!this.greeted) {
          this.greeted = true;
          this.hello();
        }
        break;
      case "-ERR":
        this.log(`the broker said ${line}`);
        break;
      default:
      // +OK and anything new
    }
  }

  /** hello introduces the client and subscribes, then pings: the first PONG says it is ready. */
  hello() {
    const intro = { verbose: false, pedantic: false, lang: "bitburner-js", version: String(VERSION), protocol: 1, headers: false, no_responders: false, name: this.opts.name };
    let text = `CONNECT ${JSON.stringify(intro)}\r\n`;
    let sid = 0;
    for (const subject of this.opts.subjects) text += `SUB ${subject} ${++sid}\r\n`;
    text += `SUB ${this.inbox}.* ${++sid}\r\nPING\r\n`;
    this.pongDue = Date.now() + 10000;
    this.write(text);
  }

  deliver(subject, reply, data) {
    const waiting = this.requests.get(subject);
    if (waiting) {
      this.requests.delete(subject);
      waiting(data);
      return;
    }
    try {
      this.opts.onMessage(subject, reply, data);
    } catch (e) {
      this.log(`request ${subject} failed: ${e?.message ?? e}`);
    }
  }
}
