"""The tables of ``bench/per_message.py``: our figures beside Kannel's, as ratios, and
the issue 23 targets each checked against the same run."""

from __future__ import annotations

COLUMNS = [
    (setup, mode) for setup in ("embedded", "postgres") for mode in ("wait0", "wait", "dry_run")
]
MODE_LABELS = {"wait0": "wait=0", "wait": "default wait", "dry_run": "dry_run=1"}


def markdown(mean: dict, clients: list[int], kannel_version: str) -> str:
    """Every table, as markdown; ``mean`` is ``per_message.mean_of_rounds``'s output."""
    kannel = mean.get("kannel") or {}
    title = f"Kannel {kannel_version}" if kannel else f"no Kannel ({kannel_version or 'skipped'})"
    sections = []
    if any(mean.get(part) for part in ("kannel", "embedded", "postgres")):
        sections += [
            f"Requests/s (ratio to {title}'s accepted rate of the same run):",
            _table(mean, kannel, clients, _rate_cell, "accepted [to the SMSC]"),
            "p50 / p99 latency, ms:",
            _table(mean, kannel, clients, _latency_cell, "p50 / p99"),
            "CPU per message, ms (Kannel: bearerbox + smsbox; embedded: its one process; "
            "postgres: the daphne processes, the worker, PostgreSQL and Redis):",
            _table(mean, kannel, clients, _cpu_cell, "ms"),
        ]
    if mean.get("kannel_store"):
        sections += [
            "Against Kannel with its store file (store-type = file: it keeps what it accepted, "
            "as we store it), requests/s and the ratio of ours with wait=0:",
            _stored_kannel(mean, clients),
        ]
    if mean.get("e2e"):
        sections += ["End to end, every message with its receipt:", _e2e(mean["e2e"])]
    sections += ["Issue 23 targets, in this run:", "\n".join(_targets(mean, kannel))]
    return "\n\n".join(sections)


def _table(mean: dict, kannel: dict, clients: list[int], cell, kannel_header: str) -> str:
    columns = [c for c in COLUMNS if mean.get(c[0])]
    header = ["clients", f"Kannel {kannel_header}"]
    header += [f"{setup} {MODE_LABELS[mode]}" for setup, mode in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for count in clients:
        base = kannel.get(f"@{count}") or {}
        row = [str(count), cell(base, None) if base else "-"]
        for setup, mode in columns:
            figures = mean[setup].get(f"{mode}@{count}")
            row.append(cell(figures, base) if figures else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _error(figures: dict) -> str | None:
    return "error: " + figures["error"][:60] if "error" in figures else None


def _rate_cell(figures: dict, kannel: dict | None) -> str:
    if _error(figures):
        return _error(figures)
    text = f"{figures['req_per_s']:,.0f}"
    if kannel is None:
        text += f" [{figures['to_smsc_per_s']:,.0f}]"
    elif kannel and "error" not in kannel:
        text += f" ({figures['req_per_s'] / kannel['req_per_s']:.2f}x)"
    if figures.get("errors"):
        text += f", {figures['errors']:,.0f} errors"
    return text


def _latency_cell(figures: dict, _kannel: dict | None) -> str:
    return _error(figures) or f"{figures['p50_ms']:.2f} / {figures['p99_ms']:.1f}"


def _cpu_cell(figures: dict, _kannel: dict | None) -> str:
    return _error(figures) or f"{figures['cpu_ms_per_msg']:.2f}"


def _stored_kannel(mean: dict, clients: list[int]) -> str:
    setups = [setup for setup in ("embedded", "postgres") if mean.get(setup)]
    header = ["clients", "Kannel with store file, accepted (p50 ms, CPU ms/msg)"]
    header += [f"{setup} wait=0" for setup in setups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for count in clients:
        stored = mean["kannel_store"].get(f"@{count}") or {}
        if not stored or _error(stored):
            row = [str(count), _error(stored) or "-"] + ["-"] * len(setups)
        else:
            row = [
                str(count),
                f"{stored['req_per_s']:,.0f} ({stored['p50_ms']:.2f}, "
                f"{stored['cpu_ms_per_msg']:.2f})",
            ]
            for setup in setups:
                ours = mean[setup].get(f"wait0@{count}") or {}
                row.append(_rate_cell(ours, stored) if ours else "-")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def _e2e(e2e: dict) -> str:
    kannel = e2e.get("kannel") or {}
    lines = ["| | msg/s | ratio to Kannel | CPU ms/msg |", "|---|---|---|---|"]
    for name in ("kannel", "embedded", "postgres"):
        figures = e2e.get(name)
        if not figures:
            continue
        if _error(figures):
            lines.append(f"| {name} | {_error(figures)} | | |")
            continue
        ratio = (
            f"{figures['msg_per_s'] / kannel['msg_per_s']:.2f}x"
            if kannel.get("msg_per_s") and name != "kannel"
            else ""
        )
        label = "Kannel, reaching the SMSC, receipts called back" if name == "kannel" else name
        lines.append(
            f"| {label} | {figures['msg_per_s']:,.0f} | {ratio} | {figures['cpu_ms_per_msg']:.2f} |"
        )
    return "\n".join(lines)


def _targets(mean: dict, kannel: dict) -> list[str]:
    """Targets 1-5 of issue 23, per set-up: the figure, and met or not."""
    lines = []
    for setup in ("embedded", "postgres"):
        ours = mean.get(setup) or {}
        if not ours and setup not in (mean.get("e2e") or {}):
            continue
        one, one_wait = ours.get("wait0@1", {}), ours.get("wait@1", {})
        twenty, k1, k20 = ours.get("wait0@20", {}), kannel.get("@1", {}), kannel.get("@20", {})
        checks = []
        if "req_per_s" in one and "req_per_s" in k1:
            ratio = one["req_per_s"] / k1["req_per_s"]
            checks.append(_check("1 one client wait=0 rate", f"{ratio:.2f}x", ratio >= 1.0))
        if "cpu_ms_per_msg" in one:
            cpu = one["cpu_ms_per_msg"]
            checks.append(_check("1 ... CPU/msg", f"{cpu:.2f} ms", cpu <= 1.0))
        if "p50_ms" in one_wait:
            p50 = one_wait["p50_ms"]
            checks.append(_check("2 one client default wait p50", f"{p50:.2f} ms", p50 <= 2.0))
        if "req_per_s" in twenty and "req_per_s" in k20:
            ratio = twenty["req_per_s"] / k20["req_per_s"]
            checks.append(_check("3 twenty clients wait=0", f"{ratio:.2f}x", ratio >= 0.3))
        e2e = mean.get("e2e") or {}
        ours_e2e, kannel_e2e = e2e.get(setup, {}), e2e.get("kannel", {})
        if "msg_per_s" in ours_e2e and "msg_per_s" in kannel_e2e:
            ratio = ours_e2e["msg_per_s"] / kannel_e2e["msg_per_s"]
            checks.append(_check("4 end to end", f"{ratio:.2f}x", ratio >= 1.25))
        tails = [
            (f["p99_ms"] / f["p50_ms"], key)
            for key, f in ours.items()
            if not key.startswith("dry_run") and f.get("p50_ms")
        ]
        if tails:
            worst, where = max(tails)
            checks.append(_check("5 p99/p50, worst", f"{worst:.1f} ({where})", worst <= 3.0))
        lines.append(f"- {setup}: " + "; ".join(checks))
    return lines


def _check(name: str, value: str, met: bool) -> str:
    return f"{name} {value} {'met' if met else 'NOT met'}"
