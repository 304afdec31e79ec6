// A function written in JavaScript: node's own http module, no dependencies.
//
// Any HTTP server is a metaparticle function when it answers
//   POST /        a JSON request with a JSON result (4xx: the request is wrong; 5xx: it failed)
//   GET /healthz  200 once it serves
// It listens on PORT; MP_CONTEXT says where it runs (pattern, name, role, index, count, replica).
//
// Under a Spread it greets {"name": ...}; under a Shard it counts the calls of each {"user": ...}
// (in memory: every call of a user lands on the shard that owns the user). {"work_ms": n} makes a
// call take n milliseconds first.
"use strict";

const http = require("http");

const port = Number(process.env.PORT || 8080);
const ctx = JSON.parse(process.env.MP_CONTEXT || "{}");
const counts = new Map();

class BadRequest extends Error {}

function handle(request) {
  if (typeof request !== "object" || request === null || Array.isArray(request)) {
    throw new BadRequest("send a JSON object");
  }
  const where = { language: "javascript", replica: ctx.replica, role: ctx.role };
  if (ctx.pattern === "Shard") {
    if (typeof request.user !== "string") throw new BadRequest("user must be a string");
    const count = (counts.get(request.user) || 0) + 1;
    counts.set(request.user, count);
    return { ...where, shard: ctx.index, shards: ctx.count, user: request.user, count };
  }
  if (typeof request.name !== "string" || !request.name) throw new BadRequest("name must be a non-empty string");
  return { ...where, greeting: `Hello, ${request.name}!` };
}

function send(res, status, doc) {
  const body = JSON.stringify(doc);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method === "GET" && req.url === "/healthz") return send(res, 200, { status: "SERVING" });
  if (req.method !== "POST" || req.url !== "/") return send(res, 404, { error: `no ${req.method} ${req.url}` });
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    let request;
    try {
      request = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    } catch (err) {
      return send(res, 400, { error: `not JSON: ${err.message}` });
    }
    const answer = () => {
      try {
        send(res, 200, handle(request));
      } catch (err) {
        send(res, err instanceof BadRequest ? 400 : 500, { error: err.message });
      }
    };
    const work = Number(request && request.work_ms) || 0;
    if (work > 0) setTimeout(answer, work);
    else answer();
  });
});

server.listen(port, "0.0.0.0", () => console.log(`${ctx.role} ${ctx.replica} listening on ${port}`));
for (const signal of ["SIGTERM", "SIGINT"]) process.on(signal, () => server.close(() => process.exit(0)));
