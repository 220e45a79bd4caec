// Submit a plan to deployer from Node.js, then wait until it is accepted or rejected
// and until it ends. Usage: node submit.js plan.json
// Env: DEPLOYER_BROKER_URL (default redis://127.0.0.1:6379/0), DEPLOYER_REDIS_URL (default: broker).
"use strict";
const fs = require("fs");
const celery = require("celery-node");
const Redis = require("ioredis");

const BROKER = process.env.DEPLOYER_BROKER_URL || "redis://127.0.0.1:6379/0";
const STATE = process.env.DEPLOYER_REDIS_URL || BROKER;
const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "ROLLED_BACK"]);
const sleep = (ms) => new Promise((ok) => setTimeout(ok, ms));

async function main() {
  const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
  const planId = String(plan.planId);
  const redis = new Redis(STATE);
  const since = `${Date.now() - 1000}-0`;

  // Task name, queue and JSON args are the public contract (docs/integration.md).
  // No result backend is needed: state is read from Redis below.
  const client = celery.createClient(BROKER, BROKER, "deployer.control");
  client.sendTask("deployer.submit_plan", [plan], {});

  // Accepted (hash deployer:plan:{planId} exists) or rejected (stream deployer:rejections)?
  // Rejections first: a planId already taken by another plan has a hash, and its refusal
  // (PLAN_CONFLICT) is an entry newer than `since`. Use fresh planIds to avoid the race
  // of reading that hash before the worker answered.
  for (let i = 0; ; i++) {
    const entries = await redis.xrange("deployer:rejections", since, "+");
    const mine = entries.map(([, f]) => fields(f)).filter((f) => f.planId === planId).pop();
    if (!mine && (await redis.hget(`deployer:plan:${planId}`, "status"))) break;
    if (mine) {
      console.log(`plan ${planId}: REJECTED ${mine.code}: ${mine.message}`);
      for (const e of JSON.parse(mine.errors || "[]")) console.log(`  ${e.field}: ${e.reason}`);
      return finish(client, redis, 2);
    }
    if (i > 300) { console.log(`plan ${planId}: not picked up (is a worker running?)`); return finish(client, redis, 3); }
    await sleep(100);
  }
  let status;
  for (;;) {
    const plan = await redis.hgetall(`deployer:plan:${planId}`);
    status = plan.status;
    const done = Object.entries(plan).filter(([k]) => k.startsWith("c:")).map(([k, v]) => `${k.slice(2)}=${v}`);
    console.log(`plan ${planId}: ${status} (${done.join(" ")})`);
    if (TERMINAL.has(status)) break;
    await sleep(500);
  }
  return finish(client, redis, status === "COMPLETED" ? 0 : 1);
}

function fields(flat) {
  const out = {};
  for (let i = 0; i < flat.length; i += 2) out[flat[i]] = flat[i + 1];
  return out;
}

async function finish(client, redis, code) {
  await client.disconnect().catch(() => {});
  redis.disconnect();
  process.exit(code);
}

main().catch((err) => { console.error(err); process.exit(1); });
