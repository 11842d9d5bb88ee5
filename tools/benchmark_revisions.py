"""Before/after of a code change: tools/benchmark_stage2.py run from two (or more) revisions, interleaved.

Each revision is checked out once into a temporary git worktree (``WORKTREE`` = this checkout as it is, uncommitted
changes included), and each run is a fresh process, so nothing of one revision leaks into another and the old code
needs no switch of its own. The runs go round-robin ``--repeats`` times, so a machine that slows down or speeds up
slows every revision alike; the table gives medians, ratios to the first revision, and every run.

    # the uncommitted change vs HEAD, full-size networks on the CPU (one window, two steps):
    python tools/benchmark_revisions.py HEAD WORKTREE --repeats 3 -- \\
        --full-size --device cpu --dtype fp32 --size 128 --frames 16 --steps 2 --skip-vae
    # two commits, small config:
    python tools/benchmark_revisions.py 2ff3bcc HEAD -- --device cpu --dtype fp32 --size 72 --frames 48 --steps 10

The arguments after ``--`` go to benchmark_stage2.py unchanged (not ``--compare`` or ``--json``). Both revisions
build the same random weights (benchmark_stage2 seeds them), so the final latents are comparable too: the table
gives the largest difference to the first revision's.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
WORKTREE = "WORKTREE"


def checkout(rev: str, into: Path) -> Path:
    """The folder to run ``rev`` from: this checkout for WORKTREE, else a detached git worktree in ``into``."""
    if rev == WORKTREE:
        return REPO
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True)
    if sha.returncode != 0:
        raise SystemExit(f"{rev!r} is not a commit of {REPO}: give a commit, branch or tag, or WORKTREE.")
    folder = into / sha.stdout.strip()[:12]
    if not folder.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(folder), sha.stdout.strip()],
                       check=True)
    return folder


def run_once(tree: Path, bench_args: list[str], out: Path) -> dict:
    script = tree / "tools" / "benchmark_stage2.py"
    if not script.is_file():  # revisions before the tools/ folder kept it in scripts/
        script = tree / "scripts" / "benchmark_stage2.py"
    cmd = [sys.executable, str(script), *bench_args, "--json", str(out / "result.json")]
    if "--save-latents" in script.read_text():  # revisions before 2026-11-30 cannot save them
        cmd += ["--save-latents", str(out / "latents.npy")]
    proc = subprocess.run(cmd, cwd=str(tree), capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark_stage2.py failed in {tree}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return json.loads((out / "result.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("revisions", nargs="+", help=f"commits (or {WORKTREE} for this checkout as it is); the first is the base")
    ap.add_argument("--repeats", type=int, default=3)
    args, bench_args = ap.parse_known_args()
    if bench_args[:1] == ["--"]:
        bench_args = bench_args[1:]
    if len(args.revisions) < 2:
        ap.error("give at least two revisions")
    if any(a in ("--compare", "--json", "--save-latents") for a in bench_args):
        ap.error("--compare, --json and --save-latents are this script's to set")
    work = Path(tempfile.mkdtemp(prefix="aniportrait-revisions-"))
    trees = {}
    try:
        trees = {rev: checkout(rev, work / "trees") for rev in args.revisions}
        times: dict[str, list[float]] = {rev: [] for rev in args.revisions}
        latents: dict[str, np.ndarray] = {}
        for rep in range(args.repeats):
            order = args.revisions[rep % len(args.revisions):] + args.revisions[:rep % len(args.revisions)]
            for rev in order:
                out = work / "runs" / f"{rep}_{len(times[rev])}_{abs(hash(rev))}"
                out.mkdir(parents=True)
                res = run_once(trees[rev], bench_args, out)
                times[rev].append(res["sampler_s_per_frame"])
                if (out / "latents.npy").exists():
                    latents.setdefault(rev, np.load(out / "latents.npy"))
                print(f"[{rev:>12s} run {rep}] {res['sampler_s_per_frame']:.4f} s/frame", flush=True)
        base_rev = args.revisions[0]
        base = statistics.median(times[base_rev])
        print(f"\nbenchmark_stage2.py {' '.join(bench_args)}; {args.repeats} interleaved runs per revision, medians")
        print("| revision | s/frame | ratio | max latent diff | runs |\n| --- | ---: | ---: | ---: | --- |")
        for rev in args.revisions:
            med = statistics.median(times[rev])
            diff = f"{float(np.abs(latents[rev] - latents[base_rev]).max()):.2e}" \
                if rev in latents and base_rev in latents else "-"
            print(f"| {rev} | {med:.4f} | {med / base:.3f} | {diff} | {', '.join(f'{t:.4f}' for t in times[rev])} |")
    finally:
        for rev, tree in trees.items():
            if tree != REPO:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tree)], capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
