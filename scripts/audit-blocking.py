#!/usr/bin/env python3
"""Lists calls that may block (std::fs, the redb store, /proc, child processes, CNI config,
liveness checks) made directly in async code of corrald, i.e. not inside a closure given to
spawn_blocking / a blocking helper / a thread. Rough (tracks braces, not a Rust parser): a
place to look, not a verdict. Usage: scripts/audit-blocking.py [crates/corrald/src]"""
import re, sys, pathlib

BLOCKING = re.compile(r"std::fs::|\bfs::(read|write|create|remove|metadata|rename|File)|File::(open|create)|"
    r"\.store\.(get|put|list|delete|commit|transaction)|\bstore\.(get|put|list|delete)|"
    r"Command::new|\.output\(\)|pause_alive\(|\.is_alive\(|shim_alive\(|read_exit\(|"
    r"CniConfig::load|\.sandbox\(|\.record_sync\(|layer_usage\(|read_net_dev\(|"
    r"std::thread::sleep|\.wait\(\)|spawn_pause\(|refreshed\(")
SYNC_OPENERS = re.compile(r"spawn_blocking\(|\bblocking\(|thread::spawn\(|thread::Builder|\bblock_in_place\(|with_env\(|\.run_blocking\(")

def audit(path):
    out = []
    stack = []  # each: 'async' | 'sync' | None
    pending = None
    in_tests = False
    for no, line in enumerate(path.read_text().splitlines(), 1):
        code = line.split("//")[0]
        if re.match(r"\s*#\[cfg\(test\)\]", line):
            in_tests = True
        if in_tests:
            continue
        if re.search(r"\basync\s+fn\b|\basync\s+move\s*\{|\basync\s*\{", code):
            pending = "async"
        elif SYNC_OPENERS.search(code) or re.search(r"(^|\s)fn\s+\w+", code) or re.search(r"move\s*\|\|", code) or re.search(r"\|\s*\{", code) and "async" not in code:
            if SYNC_OPENERS.search(code) or re.search(r"(^|\s)fn\s+\w+", code):
                pending = "sync"
        ctx = next((c for c in reversed(stack) if c), None)
        if ctx == "async" and BLOCKING.search(code) and pending != "sync":
            out.append(f"{path}:{no}: {line.strip()}")
        for ch in code:
            if ch == "{":
                stack.append(pending)
                pending = None
            elif ch == "}":
                if stack:
                    stack.pop()
        # a `fn` header spanning lines keeps its pending mark until its `{`
    return out

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "crates/corrald/src")
hits = [h for p in sorted(root.rglob("*.rs")) for h in audit(p)]
print("\n".join(hits))
print(f"{len(hits)} possibly blocking call(s) in async code", file=sys.stderr)
