#!/usr/bin/env python3
"""Lists Rust functions longer than a limit (default 80 lines, signature to closing brace) in
crates/, leaving out tests (tests/ and benches/ folders, *tests.rs files, `#[cfg(test)]` modules)
and generated code (crates/cri-proto). Rough (counts braces outside strings, chars and comments,
not a Rust parser): a place to look, not a verdict.
Usage: scripts/long-fns.py [--limit N] [DIR ...]   (default DIR: crates)"""
import pathlib
import re
import sys

FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"[^\"]*\"\s+)?fn\s+(\w+)")
SKIP_DIRS = {"tests", "benches", "target", "cri-proto"}


def code_of(line, in_block):
    """The line without strings, chars and comments; whether a block comment is still open."""
    out, i = [], 0
    while i < len(line):
        if in_block:
            end = line.find("*/", i)
            if end < 0:
                return "".join(out), True
            i, in_block = end + 2, False
        elif line.startswith("//", i):
            break
        elif line.startswith("/*", i):
            in_block, i = True, i + 2
        elif line[i] == '"':
            i += 1
            while i < len(line) and line[i] != '"':
                i += 2 if line[i] == "\\" else 1
            i += 1
        elif re.match(r"'(\\.|[^\\'])'", line[i:]):
            i += len(re.match(r"'(\\.|[^\\'])'", line[i:]).group(0))
        else:
            out.append(line[i])
            i += 1
    return "".join(out), in_block


def long_fns(path, limit):
    """(length, name, first line) of each function over `limit` lines outside test code."""
    found, stack, in_block = [], [], False  # stack: ("fn", name, start) or ("{",) or ("test",)
    pending_fn = pending_test = None
    for no, line in enumerate(path.read_text().splitlines(), 1):
        if re.match(r"\s*#\[cfg\(test\)\]", line):
            pending_test = True
        code, in_block = code_of(line, in_block)
        m = FN.match(code)
        if m:
            pending_fn = (m.group(7), no)
        for ch in code:
            if ch == "{":
                if pending_test:
                    stack.append(("test",))
                elif pending_fn:
                    stack.append(("fn",) + pending_fn)
                else:
                    stack.append(("{",))
                pending_fn = pending_test = None
            elif ch == "}" and stack:
                top = stack.pop()
                in_test = any(e[0] == "test" for e in stack)
                if top[0] == "fn" and not in_test and no - top[2] + 1 > limit:
                    found.append((no - top[2] + 1, top[1], top[2]))
            elif ch == ";":
                pending_fn = pending_test = None  # a declaration without a body
    return found


def main():
    args, limit = sys.argv[1:], 80
    if args[:1] == ["--limit"]:
        limit, args = int(args[1]), args[2:]
    rows = []
    for root in args or ["crates"]:
        for path in sorted(pathlib.Path(root).rglob("*.rs")):
            if SKIP_DIRS & set(path.parts) or path.name.endswith("tests.rs"):
                continue
            rows += [(n, f"{path}:{start}", name) for n, name, start in long_fns(path, limit)]
    for n, place, name in sorted(rows, reverse=True):
        print(f"{n:4} {place} {name}")


if __name__ == "__main__":
    main()
