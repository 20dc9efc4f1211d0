"""`make mutate`'s summary: a score per mutated module, then every mutant that was not killed.

Reads `mutmut results --all true` on stdin (lines `    codexd.jobs.x_name__mutmut_3: killed`).
A timeout counts as killed (the mutant made the tests hang); a mutant no selected test reaches
("no tests") counts as a survivor; mutants a partial run did not check are left out. Survivors
listed in tests/mutation_equivalents.toml, each with the reason no behaviour can tell it from
the original, are accepted: the score is killed / (checked - accepted). An accepted mutant that
was killed, or that no longer exists, is reported as stale so the list stays honest.

Exits 1 when a module is under the floor (default 90 %, `--floor`), 2 when there is nothing to
report.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from collections import Counter, defaultdict
from pathlib import Path

KILLED = frozenset({"killed", "timeout", "caught by type check"})
NOT_CHECKED = "not checked"
EQUIVALENTS = Path(__file__).with_name("mutation_equivalents.toml")


def module_of(key: str) -> str:
    """`codexd.jobs.xǁJobManagerǁcreate__mutmut_2` → `codexd.jobs` (mutmut's key layout)."""
    parts = key.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i].startswith(("x_", "xǁ")):
            return ".".join(parts[:i])
    return key.rpartition(".")[0]


def load_equivalents(path: Path) -> dict[str, str]:
    """Mutant name → why it is equivalent, from the `[equivalent]` table of `path`."""
    if not path.is_file():
        return {}
    table = tomllib.loads(path.read_text("utf-8")).get("equivalent", {})
    return {str(name): str(reason) for name, reason in table.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--floor", type=float, default=90.0, help="minimum score per module, %%")
    parser.add_argument("--equivalents", type=Path, default=EQUIVALENTS)
    args = parser.parse_args(argv)
    equivalents = load_equivalents(args.equivalents)

    statuses: dict[str, Counter[str]] = defaultdict(Counter)
    not_killed: list[tuple[str, str]] = []
    seen: dict[str, str] = {}
    for line in sys.stdin:
        key, sep, status = line.strip().partition(": ")
        if not sep or "__mutmut_" not in key:
            continue
        seen[key] = status
        if status not in KILLED and status != NOT_CHECKED and key in equivalents:
            status = "equivalent"
        statuses[module_of(key)][status] += 1
        if status not in KILLED and status not in (NOT_CHECKED, "equivalent"):
            not_killed.append((key, status))
    if not statuses:
        print("no mutants: run `mutmut run` first", file=sys.stderr)
        return 2

    below = []
    print("mutation score per module (killed / (checked - accepted equivalents)):")
    for module in sorted(statuses):
        counts = statuses[module]
        total = sum(n for s, n in counts.items() if s not in (NOT_CHECKED, "equivalent"))
        if not total:
            print(f"  {module:<24} not run")
            continue
        killed = sum(n for s, n in counts.items() if s in KILLED)
        score = 100.0 * killed / total
        others = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()) if s not in KILLED)
        flag = f"  << under {args.floor:g} %" if score < args.floor else ""
        print(f"  {module:<24} {killed:>4}/{total:<4} {score:5.1f} %  {others}{flag}")
        if score < args.floor:
            below.append(module)

    if not_killed:
        print(f"\nnot killed ({len(not_killed)}; see one with `.venv/bin/mutmut show NAME`):")
        for key, status in sorted(not_killed):
            print(f"  {key}: {status}")
    run_modules = {module_of(k) for k, s in seen.items() if s != NOT_CHECKED}
    stale = sorted(
        name
        for name in equivalents
        if module_of(name) in run_modules and seen.get(name, "gone") in KILLED | {"gone"}
    )
    if stale:
        print(f"\nstale entries in {args.equivalents.name} (killed or gone; review them):")
        for name in stale:
            print(f"  {name}: {seen.get(name, 'gone')}")
    return 1 if below else 0


if __name__ == "__main__":
    sys.exit(main())
