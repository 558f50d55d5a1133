"""The ratio table (Markdown) and the plots (PNG) from one run's results."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["METRICS", "render_report", "write_plots"]

Getter = Callable[[dict[str, Any]], float | None]


def _get(*path: str | int) -> Getter:
    def getter(result: dict[str, Any]) -> float | None:
        value: Any = result
        for key in path:
            if (isinstance(value, dict) and key in value) or (
                isinstance(value, list) and isinstance(key, int) and -len(value) <= key < len(value)
            ):
                value = value[key]
            else:
                return None
        return float(value) if isinstance(value, int | float) else None

    return getter


def _best_step_cpu(role: str) -> Getter:
    """Server CPU per delivered frame at the best fan-out step (largest room)."""

    def getter(result: dict[str, Any]) -> float | None:
        sizes = result.get("fanout", {}).get("by_subscribers") or []
        if not sizes or not sizes[-1].get("steps"):
            return None
        steps = sizes[-1]["steps"]
        best = max(steps, key=lambda s: s["delivered_fps"])
        value = best.get("cpu_us_per_frame", {}).get(role)
        return float(value) if value is not None else None

    return getter


def proxy_kib(per_connection: dict[str, float]) -> float:
    """The front's memory per connection: Traefik's, or nginx's master and workers."""
    return float(
        sum(v for role, v in per_connection.items() if role.startswith(("traefik", "nginx")))
    )


def _idle_proxy_kib(result: dict[str, Any]) -> float | None:
    per = result.get("idle", {}).get("kib_per_connection")
    if not per or not any(role.startswith(("traefik", "nginx")) for role in per):
        return None
    return proxy_kib(per)


def _ticker_stall_ratio(result: dict[str, Any]) -> float | None:
    phases = result.get("ticker", {}).get("phases")
    if not phases:
        return None
    return float(phases["stalled"]["fast_delivered_ratio"])


def _best_step_loadgen_cores(result: dict[str, Any]) -> float | None:
    """The load generator's CPU at the best fan-out step, in cores: near 1, the rate
    reached is the client's limit, not the server's."""
    per_frame = _best_step_cpu("loadgen")(result)
    fps = _get("fanout", "max_delivered_fps")(result)
    return per_frame * fps / 1e6 if per_frame is not None and fps is not None else None


def _latency_cores(result: dict[str, Any]) -> float | None:
    cores = result.get("latency", {}).get("cpu_cores")
    return float(sum(cores.values())) if cores else None


# (key, label, unit, higher_is_better, getter)
METRICS: list[tuple[str, str, str, bool, Getter]] = [
    (
        "fanout_fps",
        "fan-out: max delivered frames/s (largest room)",
        "frames/s",
        True,
        _get("fanout", "max_delivered_fps"),
    ),
    (
        "fanout_cpu",
        "fan-out: server CPU per delivered frame",
        "µs",
        False,
        _best_step_cpu("server"),
    ),
    (
        "fanout_loadgen",
        "fan-out: load generator CPU at the best step",
        "cores",
        False,
        _best_step_loadgen_cores,
    ),
    ("latency_p50", "latency p50 (fixed load)", "ms", False, _get("latency", "latency_ms", "p50")),
    ("latency_p99", "latency p99 (fixed load)", "ms", False, _get("latency", "latency_ms", "p99")),
    ("latency_max", "latency max (fixed load)", "ms", False, _get("latency", "latency_ms", "max")),
    (
        "latency_delivered",
        "latency run: share delivered",
        "share",
        True,
        _get("latency", "delivered_ratio"),
    ),
    (
        "latency_cores",
        "latency run: CPU in use, target + load generator",
        "cores",
        False,
        _latency_cores,
    ),
    (
        "idle_kib",
        "idle: server memory per connection",
        "KiB",
        False,
        _get("idle", "kib_per_connection", "server"),
    ),
    (
        "idle_traefik_kib",
        "idle: front (Traefik or nginx) memory per connection",
        "KiB",
        False,
        _idle_proxy_kib,
    ),
    (
        "connect_rate",
        "idle: connect rate (handshake + subscribe)",
        "conn/s",
        True,
        _get("idle", "connect_rate_per_s"),
    ),
    (
        "connect_cpu",
        "idle: server CPU per connect (handshake + subscribe)",
        "µs",
        False,
        _get("idle", "cpu_us_per_connect", "server"),
    ),
    (
        "ticker_fast",
        "ticker: fast readers' delivery while 5% stall",
        "share",
        True,
        _ticker_stall_ratio,
    ),
    (
        "ticker_p99",
        "ticker: fast readers' p99 while 5% stall",
        "ms",
        False,
        _get("ticker", "phases", "stalled", "fast_latency_ms", "p99"),
    ),
    (
        "ticker_slow_closed",
        "ticker: slow readers the server disconnected",
        "",
        False,
        _get("ticker", "slow_closed"),
    ),
    (
        "churn_rate",
        "churn: connect+subscribe+close cycles/s",
        "cycles/s",
        True,
        _get("churn", "cycles_per_s"),
    ),
    (
        "churn_cpu",
        "churn: server CPU per cycle",
        "µs",
        False,
        _get("churn", "cpu_us_per_cycle", "server"),
    ),
    ("churn_errors", "churn: errors", "", False, _get("churn", "error_count")),
    (
        "presence_interval",
        "presence: settled ping interval, 10k idle connections",
        "s",
        True,
        _get("presence", "interval_s"),
    ),
    (
        "presence_pings",
        "presence: pings/s, 10k idle connections",
        "pings/s",
        False,
        _get("presence", "pings_per_s"),
    ),
    (
        "presence_cpu",
        "presence: replica CPU, 10k idle connections",
        "%",
        False,
        _get("presence", "server_cpu_percent"),
    ),
    (
        "presence_redis",
        "presence: Redis commands/s, 10k idle connections",
        "cmd/s",
        False,
        _get("presence", "redis_commands_per_s"),
    ),
    (
        "burst_frames",
        "membership burst: frames per joining user",
        "frames",
        False,
        _get("presence", "burst", "frames_per_user"),
    ),
    (
        "burst_share",
        "membership burst: frames ÷ one event per join per member",
        "share",
        False,
        _get("presence", "burst", "share_of_uncoalesced"),
    ),
]


# facts, not scores: shown in the measured values only
NO_RATIO = {
    "fanout_loadgen",
    "latency_cores",
    "ticker_slow_closed",
    "churn_errors",
    "presence_interval",
    "burst_share",
}


def _fmt(value: float | None, unit: str = "") -> str:
    if value is None or math.isnan(value):
        return "—"
    if unit == "share":
        return f"{value:.1%}"
    if abs(value) >= 10_000:
        return f"{value / 1000:.0f}k"
    if abs(value) >= 100 or value == int(value):
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def _ratio(ours: float | None, theirs: float | None) -> str:
    if ours is None or theirs is None:
        return "—"
    if theirs == 0:
        return "∞" if ours > 0 else "="
    return f"{ours / theirs:.2f}x"


def pairs(results: dict[str, Any]) -> list[tuple[str, str]]:
    """(wwws target, compared target): direct with direct, proxied with proxied."""
    out = []
    for name in results:
        if name.startswith("wwws"):
            continue  # wwws against itself: the pairs below
        proxied = name != "naive-direct"
        ours = "wwws-traefik" if proxied else "wwws-direct"
        if ours not in results:
            ours = "wwws-direct" if "wwws-direct" in results else "wwws-traefik"
        if ours in results:
            out.append((ours, name))
    if "wwws-direct" in results and "wwws-traefik" in results:
        out.append(("wwws-traefik", "wwws-direct"))
    if "wwws-nginx" in results and "wwws-traefik" in results:
        out.append(("wwws-nginx", "wwws-traefik"))
    if "wwws-durable" in results and "wwws-direct" in results:
        out.append(("wwws-durable", "wwws-direct"))
    if "wwws-traefik-gc" in results and "wwws-traefik" in results:
        out.append(("wwws-traefik-gc", "wwws-traefik"))  # Go GC tuning on Traefik's memory
    if "wwws-asyncio" in results and "wwws-direct" in results:
        out.append(("wwws-direct", "wwws-asyncio"))  # uvloop (the default) vs asyncio
    if "wwws-nofreeze" in results and "wwws-direct" in results:
        out.append(
            ("wwws-direct", "wwws-nofreeze")
        )  # gc.freeze() after start-up (the default) or not
    if "wwws-startupfreeze" in results and "wwws-direct" in results:
        out.append(
            ("wwws-direct", "wwws-startupfreeze")
        )  # full collections' survivors frozen too (the default) or start-up objects only
    if "wwws-fixed25" in results and "wwws-direct" in results:
        out.append(("wwws-direct", "wwws-fixed25"))  # the adaptive heartbeat's gain
    return out


def render_report(data: dict[str, Any]) -> str:
    results: dict[str, Any] = data["results"]
    names = list(results)
    lines = [
        f"## wwws benchmark — {data['started']} ({data['machine']['cpus']} CPUs, "
        f"Python {data['machine']['python']}; run took {data['wall_seconds'] / 60:.1f} min"
        + (", QUICK smoke: not a measurement" if data.get("quick") else "")
        + ")",
        "",
        "### Ratios: wwws ÷ each target",
        "",
        "Each cell is wwws's number divided by the target's, measured in the same run: "
        "wwws direct against the direct targets, wwws through Traefik + TLS against the "
        "proxied ones (the last column: wwws through Traefik ÷ wwws direct, the proxy's cost). "
        "↑ = higher is better (a ratio > 1 favours wwws), ↓ = lower is better "
        "(a ratio < 1 favours wwws).",
        "",
    ]
    comparisons = pairs(results)
    header = (
        "| metric | "
        + " | ".join(
            f"{ours} ÷ {theirs}" if theirs.startswith("wwws") else f"÷ {theirs}"
            for ours, theirs in comparisons
        )
        + " |"
    )
    lines += [header, "|---|" + "---|" * len(comparisons)]
    for key, label, _unit, higher, getter in METRICS:
        if key in NO_RATIO:
            continue
        cells = [
            _ratio(getter(results[ours]), getter(results[theirs])) for ours, theirs in comparisons
        ]
        if all(c == "—" for c in cells):
            continue
        lines.append(f"| {label} {'↑' if higher else '↓'} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "### Measured values",
        "",
        "| metric | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for key, label, unit, higher, getter in METRICS:
        values = [getter(results[n]) for n in names]
        if all(v is None for v in values):
            continue
        suffix = f" ({unit})" if unit and unit != "share" else ""
        lines.append(
            f"| {label}{suffix}{'' if key in NO_RATIO else ' ↑' if higher else ' ↓'} | "
            + " | ".join(_fmt(v, unit) for v in values)
            + " |"
        )
    loads = [
        (result["machine"]["other_cpus"], name, scenario)
        for name in names
        for scenario, result in results[name].items()
        if isinstance(result, dict) and "machine" in result
    ]
    if loads:
        mean = sum(load for load, _, _ in loads) / len(loads)
        worst = max(loads)
        lines += [
            "",
            f"Other load on the machine (processes not started by the bench) averaged "
            f"{mean:.2f} CPUs over the scenarios; the most was {worst[0]:.2f} CPUs during "
            f"{worst[2]} / {worst[1]}. Numbers measured next to a busy neighbour are noisier.",
        ]
    problems = []
    for name in names:
        for scenario, result in results[name].items():
            if isinstance(result, dict) and "error" in result:
                problems.append(f"- {name} / {scenario}: {result['error']}")
            elif isinstance(result, dict) and result.get("server_alive") is False:
                problems.append(f"- {name} / {scenario}: the server died during the scenario")
    if problems:
        lines += ["", "### Problems in this run", "", *problems]
    lines.append("")
    return "\n".join(lines)


def _sizes(result: dict[str, Any]) -> list[int]:
    return [s["subscribers"] for s in result.get("fanout", {}).get("by_subscribers") or []]


def write_plots(data: dict[str, Any], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results: dict[str, Any] = data["results"]
    written = []
    style = {"wwws-direct": ("C0", "-"), "wwws-traefik": ("C0", "--"), "wwws-nginx": ("C0", ":")}

    def line_style(name: str, index: int) -> dict[str, Any]:
        color, dash = style.get(name, (f"C{index + 1}", "-" if "direct" in name else "--"))
        return {"color": color, "linestyle": dash, "linewidth": 2.2 if "wwws" in name else 1.5}

    # 1. throughput vs subscribers
    fig, ax = plt.subplots(figsize=(8, 5))
    plotted = False
    for index, (name, result) in enumerate(results.items()):
        sizes = result.get("fanout", {}).get("by_subscribers") or []
        points = [
            (s["subscribers"], s.get("max_delivered_fps", 0))
            for s in sizes
            if "max_delivered_fps" in s
        ]
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, ys, marker="o", label=name, **line_style(name, index))
            plotted = True
    if plotted:
        ax.set_xlabel("subscribers in the room")
        ax.set_ylabel("max delivered frames/s")
        ax.yaxis.set_major_formatter(lambda value, _: f"{value / 1000:.0f}k")
        ax.set_xticks(sorted({x for r in results.values() for x in _sizes(r)}))
        ax.set_title("Fan-out capacity (one room, publishers ramped to saturation)")
        ax.grid(True, alpha=0.3)
        ax.legend()
        ax.set_ylim(bottom=0)
        path = out / "fanout.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)

    # 2. latency CDF
    fig, ax = plt.subplots(figsize=(8, 5))
    plotted = False
    for index, (name, result) in enumerate(results.items()):
        cdf = result.get("latency", {}).get("cdf_ms") or []
        if cdf:
            ys = [i / (len(cdf) - 1) for i in range(len(cdf))]
            ax.plot([max(x, 0.01) for x in cdf], ys, label=name, **line_style(name, index))
            plotted = True
    if plotted:
        cfg = data.get("config", {})
        ax.set_xscale("log")
        ax.set_xlabel("publish → deliver latency (ms, log scale)")
        ax.set_ylabel("fraction of deliveries")
        ax.set_title(
            f"Latency CDF: {cfg.get('latency_rate')} msg/s x "
            f"{cfg.get('latency_subscribers')} subscribers"
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        path = out / "latency_cdf.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)

    # 3. idle memory per connection
    fig, ax = plt.subplots(figsize=(8, 4.5))
    names, server_kib, traefik_kib = [], [], []
    for name, result in results.items():
        per = result.get("idle", {}).get("kib_per_connection")
        if per:
            names.append(name)
            server_kib.append(per.get("server", 0))
            traefik_kib.append(proxy_kib(per))
    if names:
        xs = range(len(names))
        bottom = ax.bar(xs, server_kib, label="server process")
        top = ax.bar(xs, traefik_kib, bottom=server_kib, label="front (Traefik or nginx)")
        ax.bar_label(bottom, fmt="%.1f", label_type="center", fontsize=8)
        ax.bar_label(top, labels=[f"{v:.0f}" if v else "" for v in traefik_kib], fontsize=8)
        ax.set_xticks(list(xs), names, rotation=20, ha="right")
        ax.set_ylabel("KiB RSS per idle connection")
        ax.set_title("Idle connections: memory per connection")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        path = out / "idle_memory.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        written.append(path)
    plt.close(fig)
    return written


def main(argv: list[str] | None = None) -> int:
    """Redraw report.md and the plots of a results folder from its results.json."""
    import json
    import sys

    folder = Path((argv if argv is not None else sys.argv[1:])[0])
    data = json.loads((folder / "results.json").read_text())
    (folder / "report.md").write_text(render_report(data))
    for path in write_plots(data, folder):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
