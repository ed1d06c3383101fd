#!/usr/bin/python3
"""doc/cli.md's examples are what the tool prints.

Sets up the segment the examples describe (doc/cli.md, "Examples that are
tested"), then, for every code block of doc/cli.md introduced by a comment
`<!-- doc-test: ARGS [; ignore: REGEX] -->`, runs `shmlimit ARGS` (with
/myapp standing for this test's segment) and compares its output with the
block. Only the stable parts are compared: times, durations, fingerprints
and pids are masked, runs of spaces count as one (column widths follow the
values), and lines matching the block's ignore regex are masked as well. A
block's first line `$ shmlimit ...` is the command shown, not output.

    doc_cli.py path/to/shmlimit doc/cli.md
"""
import os
import re
import shlex
import subprocess
import sys

CLI, DOC = sys.argv[1], sys.argv[2]
SEG = f"/shmlimit-test-doc-{os.getpid()}"

MASKS = [
    (re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z"), "<time>"),
    (re.compile(r"0x[0-9a-f]{16}"), "<fingerprint>"),
    # 0, 840ns, 12µs, 250ms, 1.5s, 12m30s, 4h48m, 833d23h, never
    (re.compile(r"(?<![\w/.])(\d+(\.\d+)?(ns|µs|ms|s|m|h|d)(\d+(s|m|h))?|never)(?![\w/])"), "<dur>"),
]


def run(args, code):
    r = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "NO_COLOR": "1"})
    if code is not None:
        assert r.returncode == code, (args, r.returncode, r.stdout, r.stderr)
    return r.stdout


def normalize(text, ignore):
    out = []
    for line in text.strip("\n").splitlines():
        line = line.replace(SEG, "/myapp")
        for pattern, repl in MASKS:
            line = pattern.sub(repl, line)
        if ignore:
            line = re.sub(ignore, "<ignored>", line)
        out.append(" ".join(line.split()))
    return out


def setup():
    """The state of /myapp that the examples show."""
    run(["create", SEG, "--capacity", "4096"], 0)
    run(["policy", SEG, "api", "5/day"], 0)
    run(["policy", SEG, "login", "10/m", "--burst", "3", "--on-full", "deny"], 0)
    for _ in range(5):
        run(["acquire", SEG, "api", "alice"], 0)
    for _ in range(2):
        run(["acquire", SEG, "api", "alice"], 1)
    run(["acquire", SEG, "api", "bob"], 0)
    run(["acquire", SEG, "api", "bob", "--cost", "6"], 1)
    run(["acquire", SEG, "login", "bad\x01key"], 0)


def blocks(text):
    pattern = re.compile(r"<!-- doc-test: (.*?) -->\n```[a-z]*\n(.*?)```", re.S)
    for m in pattern.finditer(text):
        spec = m.group(1)
        ignore = None
        if " ; ignore: " in spec:
            spec, ignore = spec.split(" ; ignore: ", 1)
        code = None
        if " ; exit: " in spec:
            spec, code = spec.split(" ; exit: ", 1)
            code = int(code)
        body = m.group(2)
        if body.startswith("$ shmlimit "):
            body = body.split("\n", 1)[1]
        yield spec, code, ignore, body


def main():
    text = open(DOC, encoding="utf-8").read()
    found = list(blocks(text))
    assert len(found) >= 6, f"only {len(found)} doc-test blocks in {DOC}"
    try:
        setup()
        failures = []
        for spec, code, ignore, body in found:
            args = [a.replace("/myapp", SEG) for a in shlex.split(spec)]
            want = normalize(body, ignore)
            got = normalize(run(args, code), ignore)
            if want != got:
                failures.append(f"`shmlimit {spec}`:\n  documented:\n    " + "\n    ".join(want) +
                                "\n  printed:\n    " + "\n    ".join(got))
        assert not failures, "doc/cli.md differs from the tool:\n" + "\n".join(failures)
    finally:
        subprocess.run([CLI, "rm", SEG], capture_output=True)
    print(f"doc_cli: {len(found)} documented outputs match")


if __name__ == "__main__":
    main()
