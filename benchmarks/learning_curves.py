"""bench_learning's arithmetic and tables: mAP at a given wall time, the spread over seeds, the summary
(final epoch and equal wall time) and its Markdown tables. Runs are dicts as bench_learning builds them:
``trainer``, ``recipe``, ``seed``, ``wall_s`` (the whole run), ``phases`` and per-epoch ``rows``
(``epoch``, ``phase``, ``mAP50``, ``mAP50-95``, ``wall_s`` from the run's start)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import format_markdown_table


def best_by(curve: Sequence[tuple[float, float]], seconds: float) -> float | None:
    """Highest value among the (wall_s, value) points reached by ``seconds``; None before the first."""
    reached = [value for at, value in curve if at <= seconds]
    return max(reached) if reached else None


def value_at(curve: Sequence[tuple[float, float]], seconds: float) -> tuple[float, bool]:
    """(value, held): linear between the (wall_s, value) points, from (0, 0) (nothing learned yet);
    past the last point its value, with held = True."""
    points = [(0.0, 0.0), *sorted(curve)]
    if seconds >= points[-1][0]:
        return points[-1][1], seconds > points[-1][0]
    for (t0, v0), (t1, v1) in zip(points, points[1:]):
        if seconds <= t1:
            return v0 + (v1 - v0) * (seconds - t0) / (t1 - t0) if t1 > t0 else v1, False
    raise AssertionError("unreachable")


def spread(values: dict[int, float | None]) -> dict[str, Any]:
    """Mean, min and max over seeds, and each seed's value."""
    numbers = [value for value in values.values() if value is not None]
    return {"mean": statistics.fmean(numbers) if numbers else None, "min": min(numbers, default=None),
            "max": max(numbers, default=None), "per_seed": values}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Final mAPs and wall time per (trainer, recipe) over seeds; the equal-wall-time comparisons."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault((run["trainer"], run["recipe"]), []).append(run)
    final = [{"trainer": trainer, "recipe": recipe, "epochs": len(group[0]["rows"]),
              **{metric: spread({run["seed"]: run["rows"][-1][metric] for run in group})
                 for metric in ("mAP50", "mAP50-95")},
              "wall_s": spread({run["seed"]: run["wall_s"] for run in group})}
             for (trainer, recipe), group in groups.items()]
    peers = {run["seed"]: run for run in runs if run["trainer"] == "ultralytics"}
    equal_time = []
    for run in runs:
        peer = peers.get(run["seed"])
        if run["trainer"] != "smartcash" or peer is None:
            continue
        ultra_at, held = value_at([(row["wall_s"], row["mAP50-95"]) for row in peer["rows"]], run["wall_s"])
        equal_time.append({
            "recipe": run["recipe"], "seed": run["seed"], "ultralytics_wall_s": peer["wall_s"],
            "smartcash_best_mAP50-95_by_then": best_by([(row["wall_s"], row["mAP50-95"]) for row in run["rows"]],
                                                       peer["wall_s"]),
            "smartcash_wall_s": run["wall_s"], "ultralytics_mAP50-95_at_smartcash_wall_s": ultra_at,
            "ultralytics_value_held_after_its_end": held})
    compared = ("smartcash_best_mAP50-95_by_then", "ultralytics_mAP50-95_at_smartcash_wall_s")
    equal_time_mean = []
    for recipe in dict.fromkeys(item["recipe"] for item in equal_time):
        items = [item for item in equal_time if item["recipe"] == recipe]
        equal_time_mean.append({"recipe": recipe, **{key: spread({item["seed"]: item[key] for item in items})
                                                     for key in compared}})
    return {"final": final, "equal_wall_time": equal_time, "equal_wall_time_mean": equal_time_mean}


def run_label(run: dict[str, Any]) -> str:
    """'smartcash auto (scratch)': the trainer, the recipe asked for and, when different, the one used."""
    used = [phase.get("recipe_used") for phase in run["phases"]]
    name = (used[0] or {}).get("name") if used else None
    recipe = Path(run["recipe"]).stem if run["trainer"] == "smartcash" else run["recipe"]
    return f"{run['trainer']} {recipe}" + (f" ({name})" if name and name != recipe else "")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _spread(values: dict[str, Any]) -> str:
    """'mean (min-max)' over seeds."""
    if values["mean"] is None:
        return ""
    return f"{values['mean']:.4f} ({values['min']:.4f}-{values['max']:.4f})"


def final_table(runs: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    """Each run's last epoch, then each (trainer, recipe)'s mean (min-max) over seeds."""
    rows = [[run_label(run), run["seed"], len(run["rows"]), run["rows"][-1]["mAP50"], run["rows"][-1]["mAP50-95"],
             f"{run['wall_s']:.1f}"] for run in runs]
    rows += [[f"**{group['trainer']} {Path(group['recipe']).stem}, mean**", "all", group["epochs"],
              _spread(group["mAP50"]), _spread(group["mAP50-95"]), f"{group['wall_s']['mean']:.1f}"]
             for group in summary["final"]]
    return format_markdown_table(["trainer / recipe", "seed", "epochs", "mAP50", "mAP50-95", "wall s"], rows)


def equal_time_table(summary: dict[str, Any]) -> str:
    """mAP50-95 of each SmartCash recipe and ultralytics at the other's end, per seed and mean (min-max)."""
    rows = [[Path(item["recipe"]).stem, item["seed"], f"{item['ultralytics_wall_s']:.1f}",
             _number(item["smartcash_best_mAP50-95_by_then"]), f"{item['smartcash_wall_s']:.1f}",
             _number(item["ultralytics_mAP50-95_at_smartcash_wall_s"])
             + (" (its final: it ended first)" if item["ultralytics_value_held_after_its_end"] else "")]
            for item in summary["equal_wall_time"]]
    rows += [[f"**{Path(item['recipe']).stem}, mean**", "all", "", _spread(item["smartcash_best_mAP50-95_by_then"]),
              "", _spread(item["ultralytics_mAP50-95_at_smartcash_wall_s"])]
             for item in summary["equal_wall_time_mean"]]
    return format_markdown_table(["recipe", "seed", "ultralytics done at s", "smartcash best by then",
                                  "smartcash done at s", "ultralytics at that time"], rows)


def epoch_table(runs: list[dict[str, Any]]) -> str:
    """One row per epoch (SmartCash's counted over both phases), a column group per run."""
    headers: list[str] = ["epoch"]
    for run in runs:
        smartcash = run["trainer"] == "smartcash"
        headers += [f"{run_label(run)} {column}"
                    for column in (["phase"] if smartcash else []) + ["mAP50 / mAP50-95", "wall s"]]
    table = []
    for epoch in range(1, max(len(run["rows"]) for run in runs) + 1):
        line: list[Any] = [epoch]
        for run in runs:
            row = run["rows"][epoch - 1] if epoch <= len(run["rows"]) else None
            values = [f"{row['mAP50']:.4f} / {row['mAP50-95']:.4f}", f"{row['wall_s']:.1f}"] if row else ["", ""]
            line += ([row["phase"] if row else ""] if run["trainer"] == "smartcash" else []) + values
        table.append(line)
    return format_markdown_table(headers, table)


def print_tables(runs: list[dict[str, Any]], summary: dict[str, Any]) -> None:
    print("\nfinal epoch (means over seeds: mean (min-max))")
    print(final_table(runs, summary))
    if summary["equal_wall_time"]:
        print("\nat equal wall time (mAP50-95)")
        print(equal_time_table(summary))
    seed = runs[0]["seed"]
    print(f"\nper epoch, seed {seed} (SmartCash's epochs counted over both phases; wall s from each run's start)")
    print(epoch_table([run for run in runs if run["seed"] == seed]))
