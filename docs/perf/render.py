#!/usr/bin/env python3
"""Render `isle bench ... --json-out FILE` JSON lines as markdown tables.

Usage: docs/perf/render.py FILE.jsonl [FILE.jsonl ...]   (no file, or "-": read stdin)

One table per bench (cp, ap), one row per (op, clients[, pipeline]); for each system its
ops/s, p50 and p99 (ms), then the ratios of the first system to the second (throughput and
latency, first / second) when two systems were measured. Lines that are not JSON objects (the
human table printed on stdout) are skipped, so a captured stdout works too. When a phase was
measured more than once (an appended file), the last measurement wins.

Standard library only.
"""

import json
import sys


def read_lines(paths):
    """Yields the JSON objects of the files (stdin for "-")."""
    for path in paths or ["-"]:
        stream = sys.stdin if path == "-" else open(path, encoding="utf-8")
        with stream:
            for number, line in enumerate(stream, 1):
                line = line.strip()
                if not line.startswith("{"):
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as err:
                    print(f"{path}:{number}: skipped, not JSON: {err}", file=sys.stderr)
                    continue
                if isinstance(value, dict):
                    yield value


def row_key(line):
    """The row a line belongs to: (op, clients, pipeline)."""
    return (line.get("op", "?"), line.get("clients", 0), line.get("pipeline", 1))


def fmt(value, digits):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def fmt_ratio(value):
    return "–" if value is None else f"{value:.2f}×"


def quotient(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def render(lines):
    """Markdown text for the phase and ratio lines."""
    benches = {}  # bench -> {"systems": [...], "phases": {(key, system): line}, "order": [...]}
    for line in lines:
        bench = line.get("bench")
        if bench is None or "results" in line:
            continue  # the HTTP benches' one-object summaries are not phase lines
        entry = benches.setdefault(bench, {"systems": [], "phases": {}, "order": []})
        if line.get("ratio"):
            continue  # recomputed from the phases, so a rerun of one side stays consistent
        system = line.get("system", "?")
        if system not in entry["systems"]:
            entry["systems"].append(system)
        key = row_key(line)
        if key not in entry["order"]:
            entry["order"].append(key)
        entry["phases"][(key, system)] = line

    out = []
    for bench, entry in benches.items():
        systems = entry["systems"]
        if not systems:
            continue
        pipelined = any(key[2] != 1 for key in entry["order"])
        header = ["op", "clients"] + (["pipeline"] if pipelined else [])
        for system in systems:
            header += [f"{system} ops/s", f"{system} p50 ms", f"{system} p99 ms"]
        pair = systems[:2] if len(systems) >= 2 else None
        if pair:
            header += [
                f"{pair[0]}/{pair[1]} ops/s",
                f"{pair[0]}/{pair[1]} p50",
                f"{pair[0]}/{pair[1]} p99",
            ]
        out.append(f"**{bench}**")
        out.append("")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
        for key in entry["order"]:
            op, clients, pipeline = key
            cells = [op, str(clients)] + ([str(pipeline)] if pipelined else [])
            for system in systems:
                line = entry["phases"].get((key, system), {})
                cell = fmt(line.get("ops_per_s"), 0)
                if line.get("errors"):
                    cell += f" ({line['errors']} err)"
                cells += [cell, fmt(line.get("p50_ms"), 2), fmt(line.get("p99_ms"), 2)]
            if pair:
                mine = entry["phases"].get((key, pair[0]), {})
                theirs = entry["phases"].get((key, pair[1]), {})
                for field in ("ops_per_s", "p50_ms", "p99_ms"):
                    cells.append(fmt_ratio(quotient(mine.get(field), theirs.get(field))))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv):
    if any(arg in ("-h", "--help") for arg in argv):
        print(__doc__.strip())
        return 0
    try:
        text = render(list(read_lines(argv)))
    except OSError as err:
        print(f"render.py: {err}", file=sys.stderr)
        return 1
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
