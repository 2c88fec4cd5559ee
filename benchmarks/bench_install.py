"""Install benchmark: the README's first command in a fresh clone, to the end of the first phase-1 epoch.

How long, from a fresh clone of the committed repository, the install takes and then the first
phase-1 training epoch.

    python -m benchmarks.bench_install [--quick] [--device cpu|cuda] [--full-phase] [--no-pip-cache]

Steps, each timed on the wall clock as its output arrives:
1. ``git clone`` of this repository's HEAD (the committed state; uncommitted work is not in it)
   into a temporary folder.
2. The block under "Set up and run the main job" in README.md, run as written in that clone with
   a clean environment (no active virtualenv): its setup commands (``python3 -m venv``,
   activate, ``pip install ...``) give the install time; then ``python -m smartcash.train
   --phase 1`` runs until its log line ``epoch 0/N`` (the end of the first epoch, its
   validation and checkpoint included), and is then stopped with Ctrl-C (SIGINT, which saves
   ``last.pt`` and exits 130) unless ``--full-phase`` lets it finish.
The synthetic dataset is generated inside the measured run (a fresh ``SMARTCASH_CACHE``), as on a
new machine; ``--reuse-dataset`` uses the existing cache instead. pip's own download cache is
used unless ``--no-pip-cache`` (then every wheel is downloaded). One run, not a median: it
downloads gigabytes and takes minutes. ``--quick`` skips it.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.common import format_table, machine_info, write_results

REPO = Path(__file__).resolve().parents[1]
SECTION = "Set up and run the main job"
#: The trainer's end-of-epoch log line: "epoch 0/N: mAP50 ... (best F @ E) SECONDS s; precise BN ...".
EPOCH_DONE = re.compile(r"epoch 0/(\d+): .*\(best [^)]*\) ([0-9.]+) s\b")
MARK = "@@bench-step"


def readme_command(readme: Path) -> str:
    """The first fenced code block after the line naming SECTION, as one command line."""
    text = readme.read_text(encoding="utf-8")
    start = text.find(SECTION)
    if start < 0:
        raise SystemExit(f"{readme}: no {SECTION!r} section")
    match = re.search(r"```[a-z]*\n(.*?)```", text[start:], flags=re.S)
    if match is None:
        raise SystemExit(f"{readme}: no code block after {SECTION!r}")
    lines = [line.rstrip("\\").strip() for line in match.group(1).splitlines() if line.strip()]
    return " ".join(lines)


def split_steps(command: str) -> tuple[list[str], list[str]]:
    """(setup steps, run steps): the run starts at the first ``python -m smartcash.`` step."""
    steps = [step.strip() for step in command.split("&&")]
    first_run = next((i for i, step in enumerate(steps) if re.match(r"python3? -m smartcash\.", step)), len(steps))
    return steps[:first_run], steps[first_run:]


def clean_environment(cache: Path | None, pip_cache: bool) -> dict[str, str]:
    """This process's environment without its virtualenv (the README starts from a bare shell)."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "YOLO_VERBOSE", "YOLO_OFFLINE")}
    active = os.environ.get("VIRTUAL_ENV") or sys.prefix
    env["PATH"] = os.pathsep.join(part for part in env.get("PATH", "").split(os.pathsep)
                                  if not part.startswith(str(Path(active))))
    if cache is not None:
        env["SMARTCASH_CACHE"] = str(cache)
    if not pip_cache:
        env["PIP_NO_CACHE_DIR"] = "1"
    return env


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)


def run_script(script: str, cwd: Path, env: dict[str, str], log: Path, stop_after_first_epoch: bool,
               timeout: float) -> dict[str, Any]:
    """Run ``script`` in bash, timestamping each step marker and the first-epoch log line."""
    marks: dict[str, float] = {}
    epoch_seconds = None
    start = time.perf_counter()
    with open(log, "w", encoding="utf-8") as sink:
        # Own process group (Ctrl-C goes to the trainer and its loader workers together), and
        # SIGINT back to its default: started from a background job it would be inherited as
        # ignored, and Python then never raises KeyboardInterrupt.
        process = subprocess.Popen(["bash", "-c", script], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, bufsize=1, start_new_session=True,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert process.stdout is not None
        stopping = False
        # A watchdog, not a check per line: a step can hang without printing anything.
        watchdog = threading.Timer(timeout, lambda: os.killpg(process.pid, signal.SIGKILL))
        watchdog.daemon = True
        watchdog.start()
        stopper: threading.Timer | None = None
        for line in process.stdout:
            now = time.perf_counter() - start
            sink.write(line)
            if line.startswith(MARK):
                marks[line.split()[1]] = now
                continue
            found = EPOCH_DONE.search(line)
            if found and "first_epoch" not in marks:
                marks["first_epoch"], epoch_seconds = now, float(found.group(2))
                if stop_after_first_epoch and not stopping:
                    os.killpg(process.pid, signal.SIGINT)  # the trainer saves last.pt and exits 130
                    stopping = True
                    # Should it not stop on Ctrl-C: SIGTERM after a minute (what follows is not timed).
                    stopper = threading.Timer(60, _terminate, (process,))
                    stopper.daemon = True
                    stopper.start()
        code = process.wait()
        watchdog.cancel()
        if stopper is not None:
            stopper.cancel()
    marks["end"] = time.perf_counter() - start
    if marks["end"] >= timeout:
        raise SystemExit(f"bench_install: stopped at --timeout {timeout:.0f} s; see {log}")
    expected = (0, 130, -signal.SIGINT, 143, -signal.SIGTERM) if stopping else (0,)
    if code not in expected:
        tail = "".join(log.read_text(encoding="utf-8").splitlines(keepends=True)[-30:])
        raise SystemExit(f"bench_install: the README command failed (exit {code}); last lines of {log}:\n{tail}")
    return {"marks": marks, "first_epoch_train_s": epoch_seconds, "exit_code": code}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip (this benchmark takes minutes and downloads GBs)")
    parser.add_argument("--device", default=None, help="append --device to the train command (default: as written)")
    parser.add_argument("--full-phase", action="store_true", help="let phase 1 finish instead of stopping after epoch 0")
    parser.add_argument("--no-pip-cache", action="store_true", help="PIP_NO_CACHE_DIR=1: download every wheel")
    parser.add_argument("--reuse-dataset", action="store_true", help="use the existing synthetic-dataset cache")
    parser.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    parser.add_argument("--keep", action="store_true", help="keep the temporary clone (and its venv)")
    args = parser.parse_args(argv)
    if args.quick:
        print("bench_install: skipped with --quick (it clones the repo, pip-installs torch and the rest into a new "
              "venv and trains; run `python -m benchmarks.bench_install` for it)")
        write_results("install_quick", {"skipped": "--quick", "machine": machine_info("cpu")})
        return 0

    command = readme_command(REPO / "README.md")
    setup, run = split_steps(command)
    if not run:
        raise SystemExit(f"README command has no `python -m smartcash.` step: {command}")
    if args.device:
        run[0] += f" --device {shlex.quote(args.device)}"
    workspace = Path(tempfile.mkdtemp(prefix="smartcash-install-"))
    clone = workspace / "smartcash"
    log = workspace / "readme-command.log"
    try:
        start = time.perf_counter()
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        clone_s = time.perf_counter() - start
        commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        lines = ["set -e"]
        for index, step in enumerate(setup):
            lines += [step, f"echo {MARK} setup{index}"]
        lines += [" && ".join(run)]
        cache = None if args.reuse_dataset else workspace / "smartcash-cache"
        print(f"bench_install: clone {commit} in {clone}; running: {command}"
              + (f" (train step: {' && '.join(run)})" if args.device else ""), file=sys.stderr)
        result = run_script("\n".join(lines), clone, clean_environment(cache, not args.no_pip_cache), log,
                            stop_after_first_epoch=not args.full_phase, timeout=args.timeout)
        marks = result["marks"]
        if "first_epoch" not in marks:
            raise SystemExit(f"bench_install: no 'epoch 0/' line in the trainer's log; see {log}")
        setup_done = marks[f"setup{len(setup) - 1}"] if setup else 0.0
        stages = [("git clone", clone_s)]
        previous = 0.0
        for index, step in enumerate(setup):
            stages.append((step, marks[f"setup{index}"] - previous))
            previous = marks[f"setup{index}"]
        stages.append((f"{run[0]}: start -> end of epoch 0 (with its validation + checkpoint)",
                       marks["first_epoch"] - setup_done))
        stages.append(("  of which the epoch's training (its results.csv epoch_time_s)", result["first_epoch_train_s"]))
        totals = {"install_s": setup_done, "install_to_first_epoch_end_s": marks["first_epoch"],
                  "clone_install_to_first_epoch_end_s": clone_s + marks["first_epoch"]}
        if args.full_phase:
            stages.append((f"{run[0]}: the whole phase", marks["end"] - setup_done))
            totals["full_phase_s"] = marks["end"] - setup_done
    finally:
        if not args.keep:
            kept_log = REPO / "benchmarks" / "results" / "install-last.log"
            if log.exists():
                kept_log.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, kept_log)
            shutil.rmtree(workspace, ignore_errors=True)
    print(format_table(["stage", "seconds"], [[name, seconds] for name, seconds in stages]))
    print(f"install (venv + pip): {totals['install_s']:.1f} s; README command start -> end of the first phase-1 "
          f"epoch: {totals['install_to_first_epoch_end_s']:.1f} s; with the clone: "
          f"{totals['clone_install_to_first_epoch_end_s']:.1f} s")
    print(f"pip cache: {'off' if args.no_pip_cache else 'on (a warm cache skips downloads)'}; "
          f"synthetic dataset: {'reused' if args.reuse_dataset else 'generated inside the run'}")
    info = machine_info(args.device or "auto")
    print(f"machine: {info}")
    path = write_results("install", {"machine": info, "commit": commit, "command": command,
                                     "stages": [{"stage": name, "seconds": seconds} for name, seconds in stages],
                                     **totals, "pip_cache": not args.no_pip_cache,
                                     "dataset_generated": not args.reuse_dataset, "exit_code": result["exit_code"]})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
