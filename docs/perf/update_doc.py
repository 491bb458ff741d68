#!/usr/bin/env python3
"""Put a benchmark run into docs/performance.md: replaces what lies between the markers
`<!-- perf:run -->` (date and machine), `<!-- perf:tables -->` (render.py's tables) and
`<!-- perf:metrics -->` (the nodes' disk counters), each closed by `<!-- /perf:NAME -->`.

Usage: update_doc.py DOC TABLES.md METRICS.txt      (standard library only)
"""

import datetime
import os
import platform
import re
import sys


def machine():
    """One line about this machine: cores, CPU model, kernel."""
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({model}), Linux {platform.release()}"


def metrics_summary(path):
    """fsyncs per batch and entries per batch, per node, from the scraped counters."""
    nodes = {}
    with open(path, encoding="utf-8") as text:
        for line in text:
            parts = line.split()
            if len(parts) != 4:
                continue
            _, node, name, value = parts
            nodes.setdefault(node, {})[name] = float(value)
    rows = ["| node | entries | batches | fsyncs | fsyncs/batch | entries/batch | "
            "reads/ReadIndex round |", "|---|---:|---:|---:|---:|---:|---:|"]
    for node, m in sorted(nodes.items()):
        batches = m.get("isle_cp_log_append_batches_total", 0)
        entries = m.get("isle_cp_log_entries_total", 0)
        fsyncs = m.get("isle_cp_log_fsyncs_total", 0)
        rounds = m.get("isle_cp_read_index_rounds_total", 0)
        reads = m.get("isle_cp_linearizable_reads_total", 0)
        per_round = f"{reads / rounds:.1f}" if rounds else "–"
        rows.append(
            f"| {node} | {entries:,.0f} | {batches:,.0f} | {fsyncs:,.0f} | "
            f"{fsyncs / batches if batches else 0:.2f} | "
            f"{entries / batches if batches else 0:.1f} | {per_round} |")
    return "\n".join(rows)


def replace(doc, name, body):
    pattern = re.compile(rf"(<!-- perf:{name} -->\n).*?(<!-- /perf:{name} -->)", re.S)
    if not pattern.search(doc):
        sys.exit(f"marker perf:{name} not found")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), doc)


def main():
    doc_path, tables_path, metrics_path = sys.argv[1:4]
    with open(doc_path, encoding="utf-8") as f:
        doc = f.read()
    with open(tables_path, encoding="utf-8") as f:
        tables = f.read()
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    doc = replace(doc, "run", f"Measured {when} on {machine()}.")
    doc = replace(doc, "tables", tables)
    doc = replace(doc, "metrics", metrics_summary(metrics_path))
    with open(doc_path, "w", encoding="utf-8") as f:
        f.write(doc)


if __name__ == "__main__":
    main()
