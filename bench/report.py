"""Turns the suite's JSON into bench/results/latest.md."""

from __future__ import annotations

from typing import Any


def f(s: Any, digits: int = 2, unit: str = "") -> str:
    """`median (min-max)` of a spread, or the plain number."""
    if s is None:
        return "n/a"
    if isinstance(s, (int, float)):
        return f"{s:.{digits}f}{unit}"
    if not isinstance(s, dict) or not s.get("n"):
        return "n/a"
    if s["n"] == 1:
        return f"{s['median']:.{digits}f}{unit}"
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def pct(s: Any, digits: int = 1) -> str:
    if not isinstance(s, dict) or not s.get("n"):
        return "n/a"
    scaled = {k: (v * 100 if k in ("min", "median", "max") else v) for k, v in s.items()}
    return f(scaled, digits, "%")


def goal(s: Any, ok: Any) -> str:
    if not isinstance(s, dict) or not s.get("n"):
        return "n/a"
    return "yes" if ok(s["median"]) else "**no**"


def cpu(mode: dict[str, Any], key: str) -> str:
    return f(mode.get("cpu_us_per_request", {}).get(key), 0)


def verified(mode: dict[str, Any]) -> str:
    v = mode.get("verified")
    if not v:
        return "-"
    text = f"{v['ok']}/{v['calls']}"
    if v.get("errors"):
        text += f" ({v['errors'][0][:80]})"
    return text


def _error(section: Any) -> str | None:
    if isinstance(section, dict) and "error" in section:
        return f"**This section failed:** `{section['error']}`\n"
    return None


def render(r: dict[str, Any]) -> str:
    out: list[str] = []
    w = out.append
    w(f"# Benchmark report ({r['mode']} run)\n")
    w(
        f"Started {r['started']}, took {r.get('seconds', 0):.0f} s, code at `{r.get('commit')}`. "
        f"Made by `python -m bench{' --quick' if r['mode'] == 'quick' else ''}` (see bench/README.md for the method). "
        "Every figure is `median (min-max)` over the repeats of this one run; ratios are taken per repeat "
        "(the setups of one repeat ran back to back) and then summarised.\n"
    )
    w(
        f"Load average at start {r.get('loadavg_at_start', float('nan')):.2f}, at end {r.get('loadavg_at_end', float('nan')):.2f} "
        "(above ~0.5 other work shared the machine during the run: compare figures within this run only).\n"
    )
    m, v = r["machine"], r["versions"]
    w("## Machine and versions\n")
    w(f"- {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_mib']} MiB, {m['os']}, Linux {m['kernel']}")
    w("- " + ", ".join(f"{k} {val}" for k, val in v.items()))
    st = r["settings"]
    w(
        f"- settings: {st['repeats']} repeats; throughput runs {st['duration']:g} s after {st['warmup']:g} s of warm-up, "
        f"3 h2load processes x {st['clients']} connections x {st['streams']} streams = {3 * st['clients'] * st['streams']} "
        f"concurrent calls, 100-byte JSON bodies; scatter/gather runs {st['scatter_duration']:g} s each, one call at a time; "
        f"{st['verify_calls']} real-client calls checked per setup and repeat\n"
    )

    w("## Headline figures\n")
    w("| figure | measured | goal | met |")
    w("|---|---|---|---|")
    sp, sh, sg, su, ex = (r.get(k, {}) for k in ("spread", "shard", "scatter", "startup", "expansion"))
    if "entry_over_direct" in sp:
        w(f"| Spread, 3 replicas: throughput entry / direct | {f(sp['entry_over_direct'])} | >= 0.90 | {goal(sp['entry_over_direct'], lambda x: x >= 0.9)} |")
        w(f"| Spread: throughput nginx round robin / direct | {f(sp['nginx_over_direct'])} | (baseline) | |")
        modes = sp["modes"]
        rate = sp.get("fixed_rate")
        w(f"| Spread: router CPU per request (us) next to nginx's, at saturation | ours {cpu(modes['entry'], 'proxy')}, nginx {cpu(modes['nginx'], 'proxy')} | | |")
        if rate and f"entry@{rate}/s" in modes:
            w(
                f"| Spread: router CPU per request (us) next to nginx's, both at {rate} req/s | ours {cpu(modes[f'entry@{rate}/s'], 'proxy')}, "
                f"nginx {cpu(modes[f'nginx@{rate}/s'], 'proxy')}; ratio {f(sp.get('router_cpu_over_nginx_at_fixed_rate'), 1)} | | |"
            )
        if "router_cpu_uvloop_over_asyncio" in sp:
            w(f"| Spread: router CPU per request, uvloop / asyncio loop (at {rate} req/s) | {f(sp['router_cpu_uvloop_over_asyncio'])} | < 1 | {goal(sp['router_cpu_uvloop_over_asyncio'], lambda x: x < 1)} |")
        w(f"| HTTP/JSON entry throughput / gRPC entry (Spread) | {f(sp['http_over_grpc_entry'])} | | |")
    if "entry_over_direct" in sh:
        w(f"| Shard, 3 shards keyed by a JSON field: entry / direct | {f(sh['entry_over_direct'])} | >= 0.85 | {goal(sh['entry_over_direct'], lambda x: x >= 0.85)} |")
        w(f"| Shard: nginx `hash $http_x_shard consistent` / direct | {f(sh['nginx_over_direct'])} | (baseline) | |")
        b = sh["balance"]
        w(f"| Shard key balance, {b['keys']} keys over {b['shards']} shards: max/mean | {b['max_over_mean']:.3f} | ~1.01 (jump hash) | |")
        w(f"| Keys moved 10 -> 11 shards | {b['moved_fraction_10_to_11']:.4f} (ideal {b['ideal_moved_fraction']:.4f}; all to the new shard: {b['moved_keys_all_went_to_the_new_shard']}) | ~1/11 | {'yes' if abs(b['moved_fraction_10_to_11'] - b['ideal_moved_fraction']) < 0.01 else '**no**'} |")
    if "added_latency_per_leaf" in sg:
        for leaves, a in sg["added_latency_per_leaf"].items():
            w(f"| Scatter/gather {leaves} leaves (1 ms work): added latency per leaf, p50 / p99 (ms) | {f(a['p50_ms'], 3)} / {f(a['p99_ms'], 3)} | | |")
        for leaves, res in sg["by_leaves"].items():
            s = res["summary"]
            w(
                f"| Scatter/gather {leaves} leaves, 1% of leaf calls +50 ms: p99 / no-straggler p99, hedged vs unhedged | "
                f"hedged {f(res['hedged_straggler_p99_over_no_straggler_p99'])}, unhedged {f(res['unhedged_straggler_p99_over_no_straggler_p99'])} | "
                f"hedged <= 1.5 | {goal(res['hedged_straggler_p99_over_no_straggler_p99'], lambda x: x <= 1.5)} |"
            )
            w(
                f"| Scatter/gather {leaves} leaves: extra leaf calls from hedging (stragglers) | {pct(s['hedged/straggler']['extra_leaf_calls'])} | <= 5% | "
                f"{goal(s['hedged/straggler']['extra_leaf_calls'], lambda x: x <= 0.05)} |"
            )
    if "ready_s" in su:
        w(f"| Start-up: `metaparticle run examples/scatter_gather` to /healthz 200 (s) | {f(su['ready_s'])} | <= 3 s | {goal(su['ready_s'], lambda x: x <= 3.0)} |")
        w(f"| Runtime process RSS (MiB, {su['runtime_processes']} processes) | {f(su['runtime_rss_mib'], 1)} | | |")
    if isinstance(ex, dict) and ex and "error" not in ex:
        for key in ("local/shard/1000", "kubernetes/shard/1000", "kubernetes/shard/100"):
            e = ex.get(key)
            if e and "seconds" in e:
                w(f"| Expansion under mocks, {key}: time (s) / memory growth (MiB) | {f(e['seconds'], 3)} / {f(e['growth_mib'], 1)} | linear | see below |")
    w("")

    w("## Spread (3 replicas, 100-byte JSON echo)\n")
    w(_error(sp) or "")
    if "modes" in sp:
        w("Function servers on CPU 0; h2load and the proxy under test on CPU 1. `direct`: one h2load per replica, 22 streams each.\n")
        w("| setup | req/s | p50 ms | p99 ms | proxy CPU us/req | servers CPU us/req | h2load CPU us/req | other programs' CPU | failed | real-client check |")
        w("|---|---|---|---|---|---|---|---|---|---|")
        for name, mode in sp["modes"].items():
            w(
                f"| {name} | {f(mode['rps'], 0)} | {f(mode['p50_ms'], 1)} | {f(mode['p99_ms'], 1)} | {cpu(mode, 'proxy')} | "
                f"{cpu(mode, 'servers')} | {f(mode['h2load_cpu_us_per_request'], 0)} | {pct(mode.get('other_cpu_share'), 0)} | {mode['failed']} | {verified(mode)} |"
            )
        w("")
        w(f"Event loop of the runtime processes: {sp.get('event_loop')}; `entry_asyncio_loop` is a second router with `MP_EVENT_LOOP=asyncio`. "
          "`http_entry` is `h2load --h1` with 66 HTTP/1.1 connections to the router's JSON entry (`POST /`). "
          "Setups named `@N/s` offer a fixed N req/s (h2load --rps) instead of saturating, so CPU per request is compared at equal load. "
          "\"Other programs' CPU\" is the share of both CPUs used during the run by processes outside the benchmark.\n")
        prof = sp.get("profile")
        if prof and "by_kind" in prof:
            w(f"Where the router's CPU goes under the entry load (py-spy, {prof['samples']} samples):\n")
            w("| kind of code | share of samples |")
            w("|---|---|")
            for kind, share in prof["by_kind"].items():
                w(f"| {kind} | {share * 100:.1f}% |")
            w("")
            w("Top frames (self time): " + "; ".join(f"`{fr[:70]}` {sh_ * 100:.1f}%" for fr, sh_ in prof["top_frames"][:6]) + "\n")
        elif prof:
            w(f"Profile: {prof.get('skipped')}\n")

    w("## Shard (3 shards keyed by the JSON field `user`)\n")
    w(_error(sh) or "")
    if "modes" in sh:
        w(
            "Three h2load processes, each sending a key owned by a different shard (our jump hash), so every shard gets a third of the load; "
            f"through nginx each sends an `x-shard` header that nginx's consistent hash maps to a different shard ({', '.join(sh['nginx_header_values'])}); "
            "`direct` sends each stream of keys straight to its shard. The real-client check asserts the answer came from the owning shard.\n"
        )
        w("| setup | req/s | p50 ms | p99 ms | proxy CPU us/req | servers CPU us/req | other programs' CPU | failed | real-client check |")
        w("|---|---|---|---|---|---|---|---|---|")
        for name, mode in sh["modes"].items():
            w(
                f"| {name} | {f(mode['rps'], 0)} | {f(mode['p50_ms'], 1)} | {f(mode['p99_ms'], 1)} | {cpu(mode, 'proxy')} | "
                f"{cpu(mode, 'servers')} | {pct(mode.get('other_cpu_share'), 0)} | {mode['failed']} | {verified(mode)} |"
            )
        b = sh["balance"]
        w(f"\nKey balance: {b['keys']} keys `user-N` over {b['shards']} shards: max/mean {b['max_over_mean']:.4f}, min/mean {b['min_over_mean']:.4f}; "
          f"10 -> 11 shards moves {b['moved_fraction_10_to_11']:.4f} of the keys (ideal {b['ideal_moved_fraction']:.4f}); lookup {b['lookup_us']:.2f} us per key in Python.\n")

    w("## Scatter/gather (leaves x 2 replicas, 1 ms of work per leaf call)\n")
    w(_error(sg) or "")
    if "by_leaves" in sg:
        d = sg.get("direct_leaf", {})
        w(f"One leaf called directly: p50 {f(d.get('p50_ms'), 3)} ms, p99 {f(d.get('p99_ms'), 3)} ms. Added latency per leaf = (fan-out latency - direct leaf latency) / leaves, from the unhedged root without stragglers."
          + (f" Slope of p50 over leaf count: {sg['p50_slope_ms_per_leaf']:.3f} ms per leaf." if "p50_slope_ms_per_leaf" in sg else "") + "\n")
        w("| leaves | root / load | requests | p50 ms | p99 ms | extra leaf calls |")
        w("|---|---|---|---|---|---|")
        for leaves, res in sg["by_leaves"].items():
            for name, s in res["summary"].items():
                w(f"| {leaves} | {name} | {f(s['requests'], 0)} | {f(s['p50_ms'], 2)} | {f(s['p99_ms'], 2)} | {pct(s['extra_leaf_calls'])} |")
        w("")
        w("`hedged`: the root as deployed (hedges a slow leaf call to the other replica after the observed p95, within a 5% budget); "
          "`unhedged`: a second root with `MP_HEDGE_AFTER=0`. `straggler`: each leaf call sleeps 50 ms more with probability 1%. "
          "Extra leaf calls are counted at the leaves (calls received / (requests x leaves) - 1).\n")
        for leaves, res in sg["by_leaves"].items():
            bad = {k: val for k, val in res["verified"].items() if val["ok"] != val["calls"]}
            w(f"Real-client check, {leaves} leaves: " + ", ".join(f"{k} {val['ok']}/{val['calls']}" for k, val in res["verified"].items()) + (f" errors: {bad}" if bad else ""))
        w("")

    w("## Start-up and memory\n")
    w(_error(su) or "")
    if "ready_s" in su:
        w(f"`metaparticle run examples/scatter_gather --port P` from the command to `GET /healthz` answering 200 (the whole topology serving): {f(su['ready_s'])} s; "
          f"never ready: {su['never_ready']}; graceful stop (SIGTERM to exit): {f(su['stop_s'])} s; a search answered correctly in {su['answers_ok']}/{len(su['runs'])} runs. "
          f"RSS per runtime process ({su['runtime_processes']} processes): {f(su['runtime_rss_mib'], 1)} MiB; the CLI itself {f(su['runs'][0]['cli_rss_mib'], 1) if su['runs'] else 'n/a'} MiB.\n")

    w("## Pulumi program expansion under mocks\n")
    w(_error(ex) or "")
    if isinstance(ex, dict) and ex and "error" not in ex:
        w("bench/programs/expand declares one Shard or ScatterGather of N shards/leaves; each measurement is a fresh process "
          "(imports and a 1-shard warm-up expansion before the clock). Memory growth = peak RSS - RSS before the expansion (below ~1 MiB it is noise).\n")
        w("| target / pattern / N | roles | resources | time s | us per shard/leaf | memory growth MiB |")
        w("|---|---|---|---|---|---|")
        for key, e in ex.items():
            if "error" in e:
                w(f"| {key} | | | error: {e['error'][:100]} | | |")
                continue
            w(f"| {key} | {e['roles']} | {e['resources']} | {f(e['seconds'], 3)} | {f(e['us_per_unit'], 0)} | {f(e['growth_mib'], 1)} |")
        w("")

    w("## Why: choices and their numbers\n")
    w(WHY)
    return "\n".join(out) + "\n"


WHY = """\
- **Pinning.** Function servers on CPU 0, h2load plus the proxy under test on CPU 1 (the method of
  shared/notes/perf-anchors.md). The replicas' core is the limit of `direct`; a proxy that keeps
  up on CPU 1 leaves entry/direct near 1, one that does not (its CPU per request times the rate,
  plus h2load and whatever else runs on CPU 1, exceeds one core) pulls it down: that is what the
  ratio detects, and the proxy's CPU per request says why. On a core shared with the servers the
  ratio would instead be about (server cost) / (server cost + proxy cost); the CPU columns give
  that directly. The "other programs' CPU" column shows how much the machine was shared.
- **Direct baseline.** h2load sends every request to the authority of its first URI (later URIs
  only contribute paths), so "direct" runs one h2load per replica/shard concurrently, 22 streams
  each. The other setups use the same three h2load processes (same generator cost), all pointed
  at the proxy: 66 concurrent calls in all, not exactly 64.
- **Shard load.** h2load repeats one body, so each of the three h2load processes carries a key of
  a different shard: each shard gets a third of the load in all three setups. Balance over many
  keys is measured separately (100k keys, 10 shards).
- **Verification.** h2load checks only the HTTP status. During every warm-up a real gRPC client
  makes calls under the same load and checks grpc-status OK and the answer (the owning shard,
  the full list of leaves); h2load's failed count is reported too.
- **Leaf work** is a 1 ms sleep: up to 33 processes on 2 cores could not run 1 ms of CPU each in
  parallel, and the figure is about fan-out overhead, not the scheduler. Straggling is decided per
  call by the leaf (request fields `straggler_rate`, `straggler_ms`), so one topology serves all
  variants; hedged and unhedged roots share the same leaves.
- **Profiling first.** py-spy on the router under load (table above) shows our own Python code
  (dispatch, `_grpc_call`, `Upstream.call`, the role) at a few percent of the router's samples;
  almost all of it is gRPC's own machinery: the Cython/C-core callbacks run by the event loop and
  gRPC's completion-queue poller thread. Trimming our per-call Python could save at most that few
  percent, so it was not done.
- **uvloop.** The runtime uses uvloop when it is installed (`MP_EVENT_LOOP=auto`, the default;
  `asyncio` or `uvloop` force one). The router-CPU row "uvloop / asyncio" is measured in this run
  with a second router forced to the asyncio loop, both at the same fixed rate. During the
  investigation, 6 interleaved pairs at 900 req/s gave uvloop/asyncio 0.92-0.98 (median 0.945),
  every pair below 1: a small, consistent gain for one optional import, so it is the default
  when installed. It stays optional: the runtime runs without it (bench/setup.sh installs it).
- **Where the router's cost sits.** The HTTP/JSON entry and the gRPC entry run the same router
  and the same upstream client; compare `http_entry@N/s` with `entry@N/s` in the Spread table:
  the gRPC entry costs more per request, so grpc.aio's server side is dearer than aiohttp's
  HTTP/1.1 server, and the profile puts most of the rest in gRPC's client call and its poller
  thread. None of it is Python of ours that could be trimmed.
- **Hedging figures.** The extra-leaf-calls column separates two causes: `hedged/plain` shows how
  many calls the p95 trigger hedges with no straggler at all; `hedged/straggler` minus that is
  what the stragglers added. Where that difference is well under the 1% of calls that straggle,
  some stragglers were not hedged, and the p99 ratio misses its 1.5x goal in those runs. A copy
  of the root instrumented during the investigation (8 leaves, stragglers, hedge after 5 ms, on
  this shared machine) showed why: every leaf call slower than 30 ms that was not hedged had
  been refused by the budget, the root's running count standing at hedged/leaf calls =
  5.0-5.2%. Hedging after p95 hedges about 5% of ordinary calls by definition, which is the whole
  5% budget; hedges cancelled before they were sent (the first call answered within a
  millisecond) count against it too, which is why the leaves saw fewer extra calls than the
  root counted. Changing the trigger or the budget is a change to the gather root, left to it;
  a quick A/B of p97/p98 triggers on this machine was too noisy to choose one.
- **No sync (thread-pool) router.** A throw-away sync gRPC proxy (grpc.server + thread pool +
  sync channel, 16 or 64 threads; not kept in the tree) was measured once during the investigation,
  in the same layout and against the same replicas, two interleaved repeats: 263-302 us CPU per
  request, against 334-366 us for the grpc.aio router and 306-310 us for grpc.aio on uvloop, at the
  same ~2,000 req/s (nginx: 36-53 us). That is 10-20% below aio+uvloop, not "far better", and a
  second server implementation would have to re-do deadlines, error mapping with mp-error-bin,
  the in-flight limit, health, the HTTP entry and graceful stop; so the router stays on grpc.aio.
"""
