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


ROUTERS = (("entry", "Python router"), ("go_entry", "Go router"))

PROXY_HEADER = (
    "| pattern | router | req/s: router (direct; nginx) | router / direct | nginx / direct | CPU us/req: router (nginx) "
    "| router CPU / nginx CPU | router CPU / function-server CPU | new upstream connections per request: router (nginx), medians |"
)


def proxy_rows(title: str, sec: Any) -> list[str]:
    """One headline row per router of a throughput section."""
    if not isinstance(sec, dict) or "modes" not in sec:
        return []
    modes, rat = sec["modes"], sec.get("ratios", {})
    nginx, direct = modes.get("nginx", {}), modes.get("direct", {})
    ncpu = nginx.get("cpu_us_per_request", {}).get("proxy")
    rows = []
    for router, label in ROUTERS:
        if router not in modes:
            continue
        mode = modes[router]
        rows.append(
            f"| {title} | {label} | {f(mode['rps'], 0)} ({med(direct.get('rps'), 0)}; {med(nginx.get('rps'), 0)}) | {f(rat.get(f'{router}_over_direct'))} "
            f"| {f(rat.get('nginx_over_direct'))} | {cpu(mode, 'proxy')} ({med(ncpu, 0)}) | {f(rat.get(f'{router}_cpu_over_nginx'), 1)} "
            f"| {f(rat.get(f'{router}_cpu_over_servers'))} | {med(mode.get('connections_per_request'), 3)} ({med(nginx.get('connections_per_request'), 3)}) |"
        )
    return rows


def med(s: Any, digits: int = 2) -> str:
    """The median of a spread alone (for figures in brackets next to a full one)."""
    return f"{s['median']:.{digits}f}" if isinstance(s, dict) and s.get("n") else "n/a"


def setup_table(w: Any, modes: dict[str, Any]) -> None:
    w("| setup | req/s | p50 ms | p99 ms | proxy CPU us/req | servers CPU us/req | h2load CPU us/req | new upstream conns/req | other programs' CPU | failed | real-client check |")
    w("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, mode in modes.items():
        w(
            f"| {name} | {f(mode['rps'], 0)} | {f(mode['p50_ms'], 1)} | {f(mode['p99_ms'], 1)} | {cpu(mode, 'proxy')} | {cpu(mode, 'servers')} "
            f"| {f(mode['h2load_cpu_us_per_request'], 0)} | {f(mode.get('connections_per_request'), 3)} | {pct(mode.get('other_cpu_share'), 0)} "
            f"| {mode['failed']} | {verified(mode)} |"
        )
    w("")


SPREAD_INTRO = (
    "`direct`: one h2load per replica (22 streams each); the other gRPC setups: three h2load processes (66 calls in flight) "
    "at `nginx` (`grpc_pass`, round robin, upstream keep-alive), `entry` (our Python router), `go_entry` (the Go router, when given), "
    "`entry_asyncio_loop` (a Python router forced to the asyncio loop, full runs with uvloop installed). `bare_echo`: three bare "
    "grpc.aio servers answering the request's own bytes, called directly like `direct`: the floor for the function server's own CPU; "
    "`direct_async`: three function servers of the same echo written `async def` (no worker thread), called the same way; "
    "`bare_echo_thread`: the bare servers handing each request to a worker thread and back (`asyncio.to_thread`), the floor for a sync function. "
    "`http_*`: `h2load --h1`, 66 HTTP/1.1 keep-alive connections posting the JSON body: to the replicas' own HTTP entries "
    "(`http_direct`), through nginx `proxy_pass` with upstream keep-alive to those same HTTP entries (`http_nginx`), to the "
    "router's HTTP entry (`http_entry`, which calls the replicas over gRPC) and the Go router's (`go_http_entry`). "
    "`go_entry_sysmon_sleeps` and `go_http_entry_sysmon_sleeps` (full runs, fixed rate only): a second Go router with "
    "`GODEBUG=schedtrace=0`, whose runtime monitor thread sleeps deeply whenever it is idle (Go's stock behaviour). Setups "
    "named `@N/s` offer a fixed N req/s (h2load --rps) instead of saturating, so CPU per request is compared at equal load. "
    "`new upstream conns/req`: TCP connections to the replicas that appeared during the measured run, per request "
    "(from /proc/net/tcp, TIME_WAIT included; for `direct` these are h2load's own). \"Other programs' CPU\" is the share of "
    "both CPUs used meanwhile by processes outside the benchmark."
)

SHARD_INTRO = (
    "Three h2load processes, each sending a key owned by a different shard (our jump hash), so every shard gets a third of the load; "
    "through nginx each sends an `x-shard` header that nginx's consistent hash maps to a different shard ({headers}); "
    "`direct` sends each stream of keys straight to its shard. The real-client check asserts the answer came from the owning shard."
)

CEILING_INTRO = (
    "Two near-free gRPC backends (bench/backend: Go standard library, h2c, one OS thread each, answering the request's own "
    "message) behind one router process, next to nginx with one worker on the same backends. The router's req/s and its CPU per "
    "request here are its own ceiling: the backends cost little, so the router (one process) is what limits. In the table the "
    "`servers` column is the backends."
)


TRACING_INTRO = (
    "Three builds of the same runtime, each with its own processes, measured side by side in every repeat: `off` (as shipped, "
    "no OTLP endpoint: the default), `no_hooks` (the same code with its tracing hooks replaced by no-ops in that process only, "
    "injected by bench/untraced.py: the baseline), `on` (`OTEL_EXPORTER_OTLP_ENDPOINT` to a local OTLP/HTTP sink that decodes "
    "every export, `OTEL_TRACES_SAMPLER=always_on`). `function/*`: one function server (the 100-byte JSON echo) called directly "
    "by three h2load processes (66 calls in flight); `router/*`: a Spread router in front of one function server of the same "
    "build. The sink's CPU is not counted in any column."
)


def tracing_section(w: Any, tr: Any) -> None:
    """The tracing-cost section: the setups, the ratios to the no-hooks build, the spans exported
    (nothing when the run did not include it)."""
    if not tr:
        return
    w("## Tracing cost: off, hooks removed, on\n")
    w(_error(tr) or "")
    if not isinstance(tr, dict) or "modes" not in tr:
        return
    w(TRACING_INTRO + "\n")
    if tr.get("measured_apart"):
        w(f"Measured apart from the rest of this report: {tr['measured_apart']}.\n")
    setup_table(w, tr["modes"])
    rat = tr.get("ratios", {})
    w("| setup | CPU per request, off / no_hooks | req/s, off / no_hooks | CPU per request, on / no_hooks | req/s, on / no_hooks |")
    w("|---|---|---|---|---|")
    for setup, group in (("function", "function server"), ("router", "router (its own CPU)")):
        w(f"| {group} | {f(rat.get(f'{setup}_off_cpu_over_no_hooks'))} | {f(rat.get(f'{setup}_off_rps_over_no_hooks'))} "
          f"| {f(rat.get(f'{setup}_on_cpu_over_no_hooks'))} | {f(rat.get(f'{setup}_on_rps_over_no_hooks'))} |")
    w("")
    hooks = tr.get("hooks")
    if hooks:
        w(f"In process (bench.tracing_cost.hook_cost_ns, a role answering at once): `Runtime.dispatch` with tracing off takes "
          f"{f(hooks['dispatch_ns'], 0)} ns per call, the same path without the tracing hooks {f(hooks['without_hooks_ns'], 0)} ns: "
          f"the hooks cost {f(hooks['dispatch_hooks_ns'], 0)} ns per request, and `tracing.with_trace` on a router's upstream "
          f"call {f(hooks['with_trace_hook_ns'], 0)} ns, against the hundreds of microseconds of CPU a request costs above.\n")
    ex = tr.get("exported", {})
    if ex:
        w("Spans the sink received from the `on` processes / requests they answered (metaparticle_requests_total), warm-ups "
          "and checks included: " + "; ".join(f"{k} {v['spans']}/{v['requests']:.0f}" for k, v in ex.items()) + ".\n")


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

    w("## Headline figures (natural scheduling)\n")
    sp, sh, ce, sg, su, ex = (r.get(k, {}) for k in ("spread", "shard", "ceiling", "scatter", "startup", "expansion"))
    w(
        "No process is pinned: the function servers, the proxy under test and h2load share both CPUs as the kernel "
        "schedules them, which is what a user running this gets. Ratios are per repeat (setups of a repeat ran back to back). "
        "CPU is per request, from /proc/PID/stat: the router's (or nginx's) own, the function servers' summed.\n"
    )
    w(PROXY_HEADER)
    w("|---|---|---|---|---|---|---|---|---|")
    for title, sec in (("Spread, 3 replicas", sp), ("Shard, 3 shards", sh), ("Ceiling: near-free backends", ce)):
        for line in proxy_rows(title, sec):
            w(line)
    w("")
    w("| figure | measured | goal | met |")
    w("|---|---|---|---|")
    for title, sec in (("Spread", sp), ("Shard", sh), ("Ceiling", ce)):
        rat = sec.get("ratios", {}) if isinstance(sec, dict) else {}
        for router, label in ROUTERS:
            if f"{router}_cpu_over_nginx" in rat:
                s = rat[f"{router}_cpu_over_nginx"]
                w(f"| {title}: {label} CPU per request / nginx's, at saturation | {f(s, 1)} | <= 2 | {goal(s, lambda x: x <= 2)} |")
    rate = sp.get("fixed_rate") if isinstance(sp, dict) else None
    spread_ratios = sp.get("ratios", {}) if isinstance(sp, dict) else {}
    for key, label in (("entry_cpu_over_nginx_at_fixed_rate", "Python router"), ("go_entry_cpu_over_nginx_at_fixed_rate", "Go router")):
        s = spread_ratios.get(key)
        if s:
            w(f"| Spread: {label} CPU per request / nginx's, both at {rate} req/s | {f(s, 1)} | <= 2 | {goal(s, lambda x: x <= 2)} |")
    for key, label in (("go_entry_cpu_sysmon_awake_over_asleep_at_fixed_rate", "gRPC"),
                       ("go_http_entry_cpu_sysmon_awake_over_asleep_at_fixed_rate", "HTTP/JSON entry")):
        s = spread_ratios.get(key)
        if s:
            w(f"| Spread: Go router ({label}) CPU per request, Go's monitor thread kept awake (the default) / left to sleep deeply "
              f"(`GODEBUG=schedtrace=0`), both at {rate} req/s | {f(s)} | (what it buys) | |")
    if isinstance(ce, dict) and "modes" in ce:
        for router, label in ROUTERS:
            if router in ce["modes"]:
                s = ce["modes"][router]["rps"]
                w(f"| Ceiling: req/s through one {label} process | {f(s, 0)} | >= 10000 | {goal(s, lambda x: x >= 10000)} |")
    for kind, label in (("function_server", "a sync function, on a worker thread"), ("async_function_server", "an async function, on the event loop")):
        for suffix, when in (("", "at saturation"), ("_at_fixed_rate", f"both at {rate} req/s")):
            s = spread_ratios.get(f"{kind}_cpu_over_bare_echo{suffix}")
            if s:
                w(f"| Function server CPU per request / a bare grpc.aio echo server's ({label}), {when} | {f(s)} | <= 1.3 | {goal(s, lambda x: x <= 1.3)} |")
    thread_baselines = (
        ("function_server_cpu_over_bare_echo_thread",
         "Function server CPU per request (a sync function) / the bare echo server's handing each request to a thread too (`asyncio.to_thread`), {when}"),
        ("bare_echo_thread_cpu_over_bare_echo",
         "The hop alone: the bare echo server handing each request to a thread (`asyncio.to_thread`) / the same server without, {when} "
         "(the floor under the sync-function figure)"),
    )
    for key, label in thread_baselines:
        for suffix, when in (("", "at saturation"), ("_at_fixed_rate", f"both at {rate} req/s")):
            s = spread_ratios.get(f"{key}{suffix}")
            if s:
                w(f"| {label.format(when=when)} | {f(s)} | (baseline) | |")
    rat = spread_ratios
    for key, label in (("http_entry_cpu_over_http_nginx", "Python router's"), ("go_http_entry_cpu_over_http_nginx", "Go router's")):
        if key in rat:
            w(f"| HTTP/JSON entry: {label} CPU per request / nginx proxying HTTP/1.1 to the replicas | {f(rat[key], 1)} | (baseline) | |")
    if "http_entry_over_http_direct" in rat:
        w(f"| HTTP/JSON entry throughput / the replicas' HTTP entries called directly (nginx: {f(rat.get('http_nginx_over_http_direct'))}) | "
          f"{f(rat['http_entry_over_http_direct'])} | (baseline) | |")
    tr = r.get("tracing", {})
    trat = tr.get("ratios", {}) if isinstance(tr, dict) else {}
    for key, label in (("function_off_cpu_over_no_hooks", "function server"), ("router_off_cpu_over_no_hooks", "Python router")):
        if key in trat:
            w(f"| Tracing off (the default): {label} CPU per request / the same build with the tracing hooks removed | {f(trat[key])} | ~1 (no measurable cost) | |")
    if isinstance(sh, dict) and "balance" in sh:
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
            if "hedged_root_cpu_over_unhedged" in res:
                w(f"| Scatter/gather {leaves} leaves, no stragglers: the hedged root's CPU per request / the unhedged root's | {f(res['hedged_root_cpu_over_unhedged'])} | | |")
    if "ready_s" in su:
        w(f"| Start-up: `metaparticle run examples/scatter_gather` to /healthz 200 (s) | {f(su['ready_s'])} | <= 3 s | {goal(su['ready_s'], lambda x: x <= 3.0)} |")
        w(f"| Runtime process RSS (MiB, {su['runtime_processes']} processes) | {f(su['runtime_rss_mib'], 1)} | | |")
    if isinstance(ex, dict) and ex and "error" not in ex:
        for key in ("local/shard/1000", "kubernetes/shard/1000", "kubernetes/shard/100"):
            e = ex.get(key)
            if e and "seconds" in e:
                w(f"| Expansion under mocks, {key}: time (s) / memory growth (MiB) | {f(e['seconds'], 3)} / {f(e['growth_mib'], 1)} | linear | see below |")
    w("")

    for title, sec, intro in (
        ("Spread (3 replicas, 100-byte JSON echo)", sp, SPREAD_INTRO),
        ("Shard (3 shards keyed by the JSON field `user`)", sh, SHARD_INTRO),
        ("Ceiling: one router in front of near-free backends", ce, CEILING_INTRO),
    ):
        w(f"## {title}\n")
        w(_error(sec) or "")
        if isinstance(sec, dict) and sec.get("skipped"):
            w(f"Skipped: {sec['skipped']}\n")
        if isinstance(sec, dict) and sec.get("go_router_error"):
            w(f"**The Go router did not start** (measured without it): `{' '.join(sec['go_router_error'].split())[:300]}`\n")
        if not isinstance(sec, dict) or "modes" not in sec:
            continue
        text = intro
        if "nginx_header_values" in sec:
            text = text.replace("{headers}", ", ".join(sec["nginx_header_values"]))
        w(text + "\n")
        w("Natural scheduling:\n")
        setup_table(w, sec["modes"])
        if sec.get("ratios"):
            w("Ratios (natural scheduling, per repeat): " + "; ".join(f"{k.replace('_', ' ')} {f(v)}" for k, v in sec["ratios"].items()) + "\n")
        if sec.get("pinned"):
            w("Pinned layout (secondary figure: function servers on CPU 0, the proxy under test and h2load on CPU 1):\n")
            setup_table(w, sec["pinned"])
            pr = sec.get("pinned_ratios", {})
            w("Pinned ratios: " + "; ".join(f"{k.replace('_', ' ')} {f(v)}" for k, v in pr.items()) + "\n")
        if "profile" in sec:
            prof = sec["profile"]
            if "by_kind" in prof:
                w(f"Where the Python router's CPU goes under the entry load (py-spy, {prof['samples']} samples):\n")
                w("| kind of code | share of samples |")
                w("|---|---|")
                for kind, share in prof["by_kind"].items():
                    w(f"| {kind} | {share * 100:.1f}% |")
                w("")
                w("Top frames (self time): " + "; ".join(f"`{fr[:70]}` {s_ * 100:.1f}%" for fr, s_ in prof["top_frames"][:6]) + "\n")
            else:
                w(f"Profile: {prof.get('skipped')}\n")
        if "balance" in sec:
            b = sec["balance"]
            w(f"Key balance: {b['keys']} keys `user-N` over {b['shards']} shards: max/mean {b['max_over_mean']:.4f}, min/mean {b['min_over_mean']:.4f}; "
              f"10 -> 11 shards moves {b['moved_fraction_10_to_11']:.4f} of the keys (ideal {b['ideal_moved_fraction']:.4f}); lookup {b['lookup_us']:.2f} us per key in Python.\n")

    tracing_section(w, r.get("tracing", {}))

    w("## Scatter/gather (leaves x 2 replicas, 1 ms of work per leaf call)\n")
    w(_error(sg) or "")
    if "by_leaves" in sg:
        d = sg.get("direct_leaf", {})
        w(f"One leaf called directly: p50 {f(d.get('p50_ms'), 3)} ms, p99 {f(d.get('p99_ms'), 3)} ms. Added latency per leaf = (fan-out latency - direct leaf latency) / leaves, from the unhedged root without stragglers."
          + (f" Slope of p50 over leaf count: {sg['p50_slope_ms_per_leaf']:.3f} ms per leaf." if "p50_slope_ms_per_leaf" in sg else "") + "\n")
        w("| leaves | root / load | requests | p50 ms | p99 ms | extra leaf calls | root CPU us/req |")
        w("|---|---|---|---|---|---|---|")
        for leaves, res in sg["by_leaves"].items():
            for name, s in res["summary"].items():
                w(f"| {leaves} | {name} | {f(s['requests'], 0)} | {f(s['p50_ms'], 2)} | {f(s['p99_ms'], 2)} | {pct(s['extra_leaf_calls'])} | {f(s.get('root_cpu_us'), 0)} |")
        w("")
        w("`hedged`: the root as deployed (hedges a slow leaf call to the other replica after the observed p97, within a 5% budget); "
          "`unhedged`: a second root with `MP_HEDGE_AFTER=0`. `straggler`: each leaf call sleeps 50 ms more with probability 1%. "
          "Extra leaf calls are counted at the leaves (calls received / (requests x leaves) - 1). "
          "Root CPU: the root process's own (all its threads), from /proc/PID/stat, per request.\n")
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
- **Natural scheduling first.** The headline figures run every process unpinned: function servers,
  the proxy under test and h2load share both CPUs as the kernel schedules them. That is what a user
  gets, and there a proxy's CPU is taken from the replicas: entry/direct is then roughly
  (server cost) / (server cost + proxy cost), which is why the router's CPU per request next to
  nginx's and next to the function servers' own is reported with it. The earlier layout (function
  servers on CPU 0, proxy and h2load on CPU 1) is kept as a secondary table: there the replicas'
  one core limits `direct`, and a proxy that fits in the other core scores entry/direct near 1
  however much CPU it burns, so it hid the router's cost. Both layouts run in the same repeat on
  the same processes (re-pinned with sched_setaffinity before each run).
- **CPU per request** is user+system time from /proc/PID/stat (all threads) of each group over the
  measured run, divided by the requests that succeeded: the proxy (router or nginx's master and
  worker), the function servers summed (the backends in the ceiling run), h2load (its rusage).
- **Upstream connections per request** are the TCP connections to the replicas' ports that exist
  at the end of the measured run (open, closing or in TIME_WAIT, from /proc/net/tcp) and did not
  at its start. nginx gets `keepalive 256`, `keepalive_requests 100000000` and `keepalive_timeout
  300s` in the upstream block (and the same keep-alive limits downstream); nginx's gRPC proxy
  carries one call per upstream connection, so it keeps about as many connections as calls in
  flight, while our routers multiplex calls on one HTTP/2 connection per replica. The warm-up
  sends a fixed number of requests (-n) so that it ends with no call in flight: h2load -D stops
  with calls in flight, and nginx closes the upstream connection of every call so aborted (its
  error log says so). Measured during this work (spread, 5 s runs, saturating and at 900 req/s, two
  interleaved repeats): nginx opened 0.001-0.013 new upstream connections per request with the
  old configuration (`keepalive 128`, default timeouts) or the new one and with a timed or a
  counted warm-up alike, the differences inside the noise; the 0.03-0.28 reported before was not
  reproduced by this method. What remains, about 3-25 new connections a second, is partly the
  function servers' `grpc.max_connection_age_ms` of 30 s (a GOAWAY per connection every ~30 s:
  1-2 a second for 33-66 connections) and nginx's pool growing to the run's concurrency at the
  start of a run (so larger per request in the short --quick runs); the rest was not attributed
  (it happens with the Go backends of the ceiling run too, which never close connections).
- **HTTP/JSON entry against nginx.** nginx cannot turn HTTP/JSON into gRPC, so it is compared as
  an HTTP/1.1 proxy in front of the same replicas: each replica also serves the runtime's HTTP entry
  (every role does when given MP_HTTP_PORT), nginx `proxy_pass`es round robin to those with
  HTTP/1.1 upstream keep-alive (`http_nginx`), and `http_direct` calls them directly. Our router's
  HTTP entry (`http_entry`) takes the same HTTP/1.1 requests and calls the replicas over gRPC. Putting
  nginx in front of our HTTP entry instead would have measured nginx plus our router, not one
  proxy against the other. The replicas' cost differs between the two (aiohttp vs grpc.aio server
  side: see the servers column), so compare the proxy columns.
- **Function server vs a bare grpc.aio server.** `bare_echo` is three processes of
  bench/bare_echo.py: grpc.aio with a generic handler returning the request bytes, no
  deserialisation, the same event loop choice as the runtime. `direct` against it is what the
  function server adds around the user's function (JSON decode and encode, admission, deadlines,
  metrics, logging, the thread-pool hop). `direct_async` serves the same echo as a coroutine: the
  difference between the two is the worker thread a sync function runs on (a thread that admission
  counts and that a call past its deadline may keep, see README "Admission"). All three are also
  measured at the fixed rate (`direct@N/s`, `direct_async@N/s`, `bare_echo@N/s`): at saturation the
  CPU per request of each also depends on how many calls it batches per wake-up, which is fewer the
  more work each call does. `bare_echo_thread` is the bare server with the same hop as asyncio
  offers it (`asyncio.to_thread`): `direct` over it separates what the function server adds from
  what handing a request to a thread and back costs in CPython at all (the wake-ups and GIL
  hand-overs between the event loop thread and the worker).
- **Ceiling backends.** bench/backend is a Go program (standard library only, h2c, `GOMAXPROCS=1`)
  that answers every call with the request's own message, so one router process is what limits.
  nghttpd (nghttp2-server) was considered: it serves files, sets content-type by file extension and
  cannot answer grpc.health.v1.Health/Watch, which the routers' channels hold open (gRPC client-side
  health checking) before they send calls to a backend. Without Go (1.24+) the ceiling section is
  skipped with the reason.
- **The Go router** (`metaparticle-router`, built by scripts/build-router where it exists) is
  optional: `bench/run --router-binary PATH` or `MP_ROUTER_BIN=PATH` adds `go_entry` (and
  `go_http_entry`) setups in the spread, shard and ceiling sections; it is started with the very
  MP_* configuration of the Python router, in front of the same replicas.
- **Go's monitor thread.** Once every P of a Go process is idle, its monitor thread (sysmon)
  sleeps until the next system call wakes it, then polls every 20 us until the process is idle
  again: a router each of whose requests arrives to an idle process paid that wake-up and a few
  polls per request (perf: sysmon 12-16% of the router's samples at 900 req/s). The router
  re-executes itself at start with `schedtrace` in GODEBUG, which keeps sysmon out of that sleep
  (it backs off to a poll every 10 ms instead: about 0.35% of a core for an idle router, which
  used none); `GODEBUG=schedtrace=0` restores Go's behaviour, and the spread section measures
  both side by side at the fixed rate. Ad hoc, one router in front of two near-free backends,
  3 interleaved repeats: 0.70-0.83x the CPU per request at 900 req/s over gRPC, 0.79-0.93x over
  the HTTP entry, 0.76-0.92x at 100 and 300 req/s (the idle polling included), unchanged at
  saturation. The setting's trace line is printed once per 24.8 days of the host's uptime (the
  longest period GODEBUG takes), so on a host up longer than that a router prints one `SCHED`
  line to stderr when it starts.
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
- **Profiling the Python router.** py-spy on the router under the entry load (full runs, table
  above) puts our own Python code (dispatch, `_grpc_call`, `Upstream.call`, the role) at a few
  percent of the router's samples; almost all of it is gRPC's own machinery: the Cython/C-core
  callbacks run by the event loop and gRPC's completion-queue poller thread. Trimming our per-call
  Python cannot close the gap to nginx; the `go_entry` rows measure the compiled router instead.
- **uvloop.** The runtime runs on uvloop, one of its dependencies (`MP_EVENT_LOOP=auto`, the
  default; `asyncio` or `uvloop` force one). In full runs, the ratio
  `router_cpu_uvloop_over_asyncio` is measured with a second router forced to the asyncio loop,
  both at the same fixed rate. During the
  investigation, 6 interleaved pairs at 900 req/s gave uvloop/asyncio 0.92-0.98 (median 0.945),
  every pair below 1: a small, consistent gain for the router, and more for a sync function
  (`python -m bench.function_ab`: 0.85x (0.83-0.92) of the function server's CPU per request on
  asyncio's loop). uvloop rounds a timer to the nearest millisecond counted from the start of the
  loop's iteration; the root's hedging once left its delay to such a timer, so a 1.4 ms delay
  fired after 1 ms (a 0.4 ms one at once) and ordinary calls spent the hedge budget (hedged p99 at
  4 leaves at the unhedged level). Hedging now keeps its delay on the clock; the scatter section
  measures the same on both loops (`bench/results/scatter-uvloop.md`, `scatter-asyncio.md`).
- **Where the Python router's cost sits.** The HTTP/JSON entry and the gRPC entry run the same
  router and the same upstream client; compare `http_entry@N/s` with `entry@N/s` (full runs):
  where the gRPC entry costs more per request, grpc.aio's server side is dearer than aiohttp's
  HTTP/1.1 server, and the profile puts most of the rest in gRPC's client call and its poller
  thread.
- **Hedging figures.** The extra-leaf-calls column separates two causes: `hedged/plain` shows how
  many calls the p97 trigger hedges with no straggler at all; `hedged/straggler` minus that is
  what the stragglers added. Where that difference is well under the 1% of calls that straggle,
  some stragglers were not hedged (the budget refused them, or the delay was learnt from a slow
  spell). The trigger was p95 until an instrumented root showed ordinary calls spending the whole
  5% budget by definition (stragglers slower than 30 ms refused with hedged/leaf calls at
  5.0-5.2%). The root CPU column is what hedging costs the root: with one leaf call to watch per
  leaf, the root is the busiest process at 16 leaves, so every task or timer per leaf call shows
  there first.
- **No sync (thread-pool) router.** A throw-away sync gRPC proxy (grpc.server + thread pool +
  sync channel, 16 or 64 threads; not kept in the tree) was measured once during the investigation,
  in the same layout and against the same replicas, two interleaved repeats: 263-302 us CPU per
  request, against 334-366 us for the grpc.aio router and 306-310 us for grpc.aio on uvloop, at the
  same ~2,000 req/s (nginx: 36-53 us). That is 10-20% below aio+uvloop, not "far better", and a
  second server implementation would have to re-do deadlines, error mapping with mp-error-bin,
  the in-flight limit, health, the HTTP entry and graceful stop; so the router stays on grpc.aio.
"""
