"""``make bench-risk``: how well the risk decisions catch fraud, on logs never tuned on.

For each seed of `BENCH_SEEDS` (the risk model was tuned on `TUNING_SEEDS`;
no seed of those is accepted here):

1. generate a labelled log (`centflow.generate.logs.write_log`: every scenario
   of `SCENARIOS`, faults on, `LINES_PER_S` lines a second of event time, the
   density of the logs the model was tuned on) and its labels file
   ``<log>.labels.jsonl``: one ``{"event_id", "scenario", "episode"}`` per
   line of a fraud episode;
2. replay it through the real pipeline in a process of its own, as an operator
   would: ``centflow run --replay LOG --out DIR --fresh`` (`run_pipeline`),
   measuring its wall time, whole-process events/s (log lines over that time,
   start-up and the DuckDB load included) and peak resident memory. The run
   gets this module's source tree first on ``PYTHONPATH`` (`SOURCE_ROOT`), so
   it executes the code the bench was started from (a clean checkout, say,
   while a working tree is being edited), and the report names its commit;
3. read the ``payments`` table the run wrote, from ``DIR/centflow.duckdb``
   opened read-only as an analyst would, left-joined on event_id to the
   labels (`read_outcomes`), checking that every labelled event is there once;
4. compute the figures of `centflow.risk.quality` (ROC AUC, average precision,
   recall at 0.1 % false positives, false declines, episodes stopped within 20
   attempts) per scenario and pooled.

Pooled figures are computed over the seeds' events together (not averaged),
each episode kept apart by its seed. The figures are printed (rich tables)
and, with ``--write FILE``, replace the `SECTION_TITLE` section of FILE (or are
appended as one), beside the goals (`GOALS`).

``--payers-memory`` instead replays a synthetic log of `PAYERS_MEMORY`
payments, each from a payer of its own (the generator draws payers from a pool
of 0.8 per line, of whom about a quarter appear: a million distinct payers
would take some four million lines), over `PAYERS_MEMORY_SPAN_S` of event
time, and reports the peak resident memory against the 1.5 GiB goal.

Memory is measured two ways: the peak of the whole process tree of the run
(``wait4``'s rusage of the ``centflow run`` process, whose ``ru_maxrss`` is the
largest resident set of it or of any descendant it waited for: the largest
single process, not a sum), and the high-water mark (``VmHWM``) of each
Bytewax worker, sampled from ``/proc`` every `POLL_S` (a high-water mark, so a
sample misses only what grew in the last `POLL_S` before the worker exited).

Every wait is bounded (`RUN_TIMEOUT_S`); a run that overstays is stopped with
its whole process group, which it leads.
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from random import Random

import duckdb
import msgspec
import numpy as np
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from centflow.errors import ConfigError, InfrastructureError, TerminalError, invariant
from centflow.generate.logs import SCENARIOS, write_log
from centflow.ingest.timeparse import format_us, parse_rfc3339_us
from centflow.risk.quality import (
    ALL,
    ALL_PAYMENTS,
    ATTEMPTS_MAX,
    FPR_MAX,
    LEGITIMATE,
    Outcomes,
    QualityRow,
    quality_table,
)
from sinks.duckdb import DATABASE_NAME

#: Seeds the risk model was tuned on (tests, shipped logs): never benchmarked.
TUNING_SEEDS = (7, 11)
#: Seeds the benchmark measures: never used for tuning.
BENCH_SEEDS = (101, 102, 103)
EVENTS_DEFAULT = 200_000
#: Lines per second of event time: the tuning logs' density (tests/test_scenarios.py:
#: 70,000 lines over 8 h; replay_data/fraud.jsonl.gz: 4,000 over 30 min). The risk
#: stages work a second of ingestion time at a time, so a sparser log is slower to
#: replay; the card-testing rule reads a payee's last minute, so density moves the
#: figures too.
LINES_PER_S = 2.4
START = "2026-11-02T00:00:00Z"
WINDOW_HINT_S = 60
RUN_TIMEOUT_S = 3_600.0
POLL_S = 0.5
STOP_GRACE_S = 10.0
OUTPUT_TAIL_LINES = 5
PAYERS_MEMORY = 1_000_000
PAYERS_MEMORY_SPAN_S = 4 * 3_600
PAYERS_MEMORY_PAYEES = 20_000
MEMORY_GOAL_BYTES = 3 * 2**29  # 1.5 GiB
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # holds centflow/, dataflows/, sinks/
SECTION_TITLE = "Risk quality (make bench-risk)"
MEMORY_SECTION_TITLE = "Risk memory, 1,000,000 distinct payers (bench_risk --payers-memory)"
#: The goals of the risk issue: (what, target, met?).
GOAL_ROC_AUC = 0.97
GOAL_BURSTS_STOPPED = 0.95
GOAL_FALSE_DECLINES = 0.005
GOALS = (
    f"ROC AUC >= {GOAL_ROC_AUC}",
    f">= {GOAL_BURSTS_STOPPED:.0%} of card-testing bursts stopped within {ATTEMPTS_MAX} attempts",
    f"false declines <= {GOAL_FALSE_DECLINES:.1%} of legitimate payments",
)


# -- the log


@dataclass(frozen=True)
class LabelledLog:
    """A generated log and its labels file."""

    seed: int
    path: Path
    labels_path: Path
    lines: int
    labels: int
    duration_s: int
    seconds: float  # to generate it


def generate_log(
    directory: Path, seed: int, events: int, lines_per_s: float = LINES_PER_S
) -> LabelledLog:
    """Write the labelled log of `seed` into `directory` (see the module docstring)."""
    invariant(seed not in TUNING_SEEDS, "seed %s is a tuning seed", seed)
    invariant(events > 0 and lines_per_s > 0, "a log needs lines and a density")
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"seed-{seed}.jsonl.gz"
    labels_path = path.with_name(f"{path.name}.labels.jsonl")
    duration_s = max(1, round(events / lines_per_s))
    started_s = time.perf_counter()
    stats = write_log(
        path,
        events,
        seed=seed,
        start_us=parse_rfc3339_us(START),
        duration_s=duration_s,
        window_hint_s=WINDOW_HINT_S,
        scenarios=SCENARIOS,
        labels_path=labels_path,
    )
    seconds = time.perf_counter() - started_s
    invariant(stats.events == events, "the log has %s lines, not %s", stats.events, events)
    invariant(labels_path.exists(), "no labels file at %s", labels_path)
    return LabelledLog(
        seed, path, labels_path, stats.events, len(stats.labels), duration_s, seconds
    )


# -- the pipeline run


@dataclass(frozen=True)
class PipelineRun:
    """What one ``centflow run`` process measured."""

    seconds: float
    peak_rss_bytes: int  # the largest process of the run's tree (wait4)
    worker_peak_rss_bytes: int  # the largest Bytewax worker (sampled VmHWM; 0 without /proc)
    command: tuple[str, ...]


def centflow_command() -> list[str]:
    """The ``centflow`` console script beside this interpreter (``python -m centflow``
    if there is none)."""
    script = Path(sys.executable).with_name("centflow")
    return [str(script)] if script.exists() else [sys.executable, "-m", "centflow"]


def run_pipeline(log: Path, out: Path, timeout_s: float = RUN_TIMEOUT_S) -> PipelineRun:
    """Replay `log` into `out` with ``centflow run --fresh`` in a process of its own.

    Its output goes to ``<out>.run.log``; a failed run raises `TerminalError`
    with the last lines of that output.
    """
    command = (*centflow_command(), "run", "--replay", str(log), "--out", str(out), "--fresh")
    out.parent.mkdir(parents=True, exist_ok=True)
    output = out.with_name(f"{out.name}.run.log")
    started_s = time.perf_counter()
    with output.open("wb") as stream:
        process = subprocess.Popen(
            command,
            stdout=stream,
            stderr=subprocess.STDOUT,
            env=_environment(),
            start_new_session=True,
        )
    try:
        status, peak_kib, worker_peak = _wait_measuring(process, started_s + timeout_s)
    except BaseException:
        _stop_group(process)
        raise
    seconds = time.perf_counter() - started_s
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code  # reaped by wait4: Popen must not wait for it again
    if code != 0:
        tail = output.read_text(errors="replace").splitlines()[-OUTPUT_TAIL_LINES:]
        raise TerminalError(f"{' '.join(command)} exited with {code}: " + " | ".join(tail))
    invariant((out / DATABASE_NAME).exists(), "the run wrote no %s", out / DATABASE_NAME)
    invariant(peak_kib > 0, "the run's rusage has no peak memory")
    return PipelineRun(seconds, peak_kib * 1024, worker_peak, command)


def _environment() -> dict[str, str]:
    """This environment, with the source tree this module was imported from first on
    ``PYTHONPATH``: the run (and its workers, which inherit it) executes the code the
    bench was started with, not whichever copy an editable install points at."""
    root = str(SOURCE_ROOT)
    existing = os.environ.get("PYTHONPATH")
    invariant(
        (SOURCE_ROOT / "centflow" / "ops" / "bench_risk.py").exists(), "no source tree at %s", root
    )
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + existing if existing else "")}


def _wait_measuring(process: subprocess.Popen[bytes], deadline_s: float) -> tuple[int, int, int]:
    """Wait for `process` (at most until `deadline_s`), sampling its workers' memory;
    return (wait status, peak RSS of the tree in KiB, largest worker VmHWM in bytes)."""
    worker_peak = 0
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            return status, int(usage.ru_maxrss), worker_peak
        if time.perf_counter() > deadline_s:
            raise TerminalError(f"the run (pid {process.pid}) did not end within its time limit")
        for child in _descendants(process.pid):
            if _is_worker(child):
                worker_peak = max(worker_peak, _high_water_bytes(child))
        time.sleep(POLL_S)


def _descendants(root: int) -> list[int]:
    """The live descendants of `root`, from ``/proc`` (none where there is no /proc)."""
    children: dict[int, list[int]] = {}
    try:
        entries = [entry.name for entry in os.scandir("/proc") if entry.name.isdigit()]
    except OSError:
        return []
    for name in entries:
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])  # the command may hold spaces
        children.setdefault(parent, []).append(int(name))
    found: list[int] = []
    frontier = [root]
    while frontier and len(found) <= len(entries):  # a tree: each pid once
        pid = frontier.pop()
        for child in children.get(pid, ()):
            found.append(child)
            frontier.append(child)
    return found


def _is_worker(pid: int) -> bool:
    try:
        return b"bytewax.run" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _high_water_bytes(pid: int) -> int:
    """A live process's peak resident memory (``VmHWM``), 0 if it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """Stop the run and its workers: the process group it leads (TERM, then KILL)."""
    if process.returncode is not None:
        return
    for signal_number in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, signal_number)
        except ProcessLookupError:
            return
        try:
            process.wait(STOP_GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


# -- what the run wrote, with the labels

_OUTCOMES_SQL = """
-- The events a run wrote, each with its label if the labels file names it.
-- Reads: run.payments (the run's DuckDB file, attached read-only), labels.
-- Returns: one row per payments row (event_id, type, risk_score, decision,
--   scenario and episode: '' and -1 when unlabelled), in event order (event
--   time, then log line).
-- Empty result: the run wrote no event.
SELECT p.event_id, p.type, p.risk_score, p.decision,
       coalesce(l.scenario, '') AS scenario, coalesce(l.episode, -1) AS episode
FROM run.payments AS p LEFT JOIN labels AS l USING (event_id)
ORDER BY p.occurred_at, CAST(regexp_extract(p.source, ':([0-9]+)$', 1) AS BIGINT), p.event_id
"""
_MISSING_SQL = "SELECT count(*) FROM labels ANTI JOIN run.payments USING (event_id)"


class _Label(msgspec.Struct):
    event_id: str
    scenario: str
    episode: int


def read_labels(path: Path) -> pa.Table:
    """A labels file as an Arrow table (event_id, scenario, episode)."""
    decoder = msgspec.json.Decoder(_Label)
    labels = [decoder.decode(line) for line in path.read_bytes().splitlines() if line.strip()]
    invariant(
        len({label.event_id for label in labels}) == len(labels), "%s repeats an event id", path
    )
    table = pa.table(
        {
            "event_id": pa.array([label.event_id for label in labels], pa.string()),
            "scenario": pa.array([label.scenario for label in labels], pa.string()),
            "episode": pa.array([label.episode for label in labels], pa.int64()),
        }
    )
    invariant(table.num_rows == len(labels), "one row per label")
    return table


def read_outcomes(out: Path, labels_path: Path, seed: int) -> Outcomes:
    """Every event of the run in `out`, with its label (episodes named ``seed:scenario:n``)."""
    labels = read_labels(labels_path)
    with duckdb.connect() as connection:
        connection.execute("ATTACH ? AS run (READ_ONLY)", [str(out / DATABASE_NAME)])
        connection.register("labels", labels)
        missing = connection.execute(_MISSING_SQL).fetchall()[0][0]
        invariant(missing == 0, "%s labelled events are not in %s's payments", missing, out)
        columns = connection.execute(_OUTCOMES_SQL).fetchnumpy()
    scenario = np.asarray(columns["scenario"], object)
    labelled = scenario != LEGITIMATE
    invariant(
        int(labelled.sum()) == labels.num_rows,
        "%s payments rows carry a label; the labels file has %s",
        int(labelled.sum()),
        labels.num_rows,
    )
    scores = np.ma.filled(np.ma.asarray(columns["risk_score"], np.float64), np.nan)
    invariant(not np.isnan(scores).any(), "%s has events without a risk score", out)
    episode = np.array(
        [
            f"{seed}:{name}:{number}" if name else ""
            for name, number in zip(scenario.tolist(), columns["episode"].tolist(), strict=True)
        ],
        object,
    )
    return Outcomes(
        np.asarray(columns["type"], object),
        scenario,
        episode,
        np.arange(len(scores), dtype=np.int64),  # the query returns them in event order
        scores,
        np.asarray(columns["decision"], object),
    )


# -- one seed, and the whole bench


@dataclass(frozen=True)
class SeedResult:
    """A seed's log, run, events and figures."""

    log: LabelledLog
    run: PipelineRun
    outcomes: Outcomes
    rows: list[QualityRow]

    @property
    def events_per_s(self) -> float:
        return self.log.lines / self.run.seconds


def measure_seed(
    seed: int,
    events: int,
    work: Path,
    lines_per_s: float = LINES_PER_S,
    timeout_s: float = RUN_TIMEOUT_S,
) -> SeedResult:
    """Generate, replay, read back and measure one seed (steps 1-4 of the module docstring)."""
    directory = work / f"seed-{seed}"
    log = generate_log(directory, seed, events, lines_per_s)
    run = run_pipeline(log.path, directory / "out", timeout_s)
    outcomes = read_outcomes(directory / "out", log.labels_path, seed)
    rows = quality_table(outcomes, SCENARIOS)
    invariant(rows[-2].fraud == log.labels, "every label is measured once")
    return SeedResult(log, run, outcomes, rows)


@dataclass(frozen=True)
class BenchResult:
    seeds: list[SeedResult]
    pooled: list[QualityRow]
    seconds: float
    events: int
    lines_per_s: float


def run_bench(
    seeds: Sequence[int],
    events: int,
    work: Path,
    lines_per_s: float = LINES_PER_S,
    on_seed: Callable[[SeedResult], None] | None = None,
) -> BenchResult:
    """Every seed in turn, then the pooled figures."""
    invariant(bool(seeds), "the bench needs a seed")
    invariant(not set(seeds) & set(TUNING_SEEDS), "tuning seeds are never benchmarked")
    started_s = time.perf_counter()
    results = []
    for seed in seeds:
        result = measure_seed(seed, events, work, lines_per_s)
        results.append(result)
        if on_seed is not None:
            on_seed(result)
    pooled = quality_table(Outcomes.joined([result.outcomes for result in results]), SCENARIOS)
    return BenchResult(results, pooled, time.perf_counter() - started_s, events, lines_per_s)


# -- the memory check


@dataclass(frozen=True)
class MemoryResult:
    payers: int
    lines: int
    span_s: int
    run: PipelineRun
    distinct_payers: int  # read back from the run's payments table
    generate_seconds: float


def write_payers_log(path: Path, payers: int, span_s: int, seed: int = BENCH_SEEDS[0]) -> int:
    """A log of `payers` valid payments, each from a payer of its own, evenly over
    `span_s` of event time (DESIGN.md's wire format); returns its line count.

    Payees (`PAYERS_MEMORY_PAYEES`) take USD, EUR or GBP; amounts are 1.00 to
    99.99, each payer has a device and an address of its own. Deterministic:
    one ``Random(seed)``, only through ``random()``.
    """
    invariant(payers > 0 and span_s > 0, "a log needs payers and a span")
    draw = Random(f"centflow-bench-risk-payers:{seed}").random
    start_us = parse_rfc3339_us(START)
    currencies = (("USD", "US"), ("EUR", "DE"), ("GBP", "GB"))
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb", compresslevel=1) as stream:
        for number in range(payers):
            payee = int(draw() * PAYERS_MEMORY_PAYEES)
            currency, country = currencies[payee % len(currencies)]
            cents = 100 + int(draw() * 9_900)
            occurred = format_us(start_us + number * span_s * 1_000_000 // payers)
            address = int(draw() * 2**24)
            stream.write(
                (
                    f'{{"event_id":"mem-{seed}-{number}","type":"payment","occurred_at":"{occurred}",'
                    f'"payer_id":"mem-payer-{number}","payee_id":"mem-payee-{payee}",'
                    f'"amount":"{cents // 100}.{cents % 100:02d}","currency":"{currency}",'
                    f'"rail":"card","country":"{country}","device_id":"mem-dev-{number}",'
                    f'"ip":"10.{address >> 16}.{address >> 8 & 255}.{address & 255}"}}\n'
                ).encode()
            )
    return payers


def payers_memory(work: Path, payers: int = PAYERS_MEMORY) -> MemoryResult:
    """Replay `write_payers_log`'s log through the pipeline and read its peak memory."""
    directory = work / "payers-memory"
    log = directory / f"payers-{payers}.jsonl.gz"
    started_s = time.perf_counter()
    lines = write_payers_log(log, payers, PAYERS_MEMORY_SPAN_S)
    generate_seconds = time.perf_counter() - started_s
    run = run_pipeline(log, directory / "out")
    with duckdb.connect(str(directory / "out" / DATABASE_NAME), read_only=True) as connection:
        distinct, rows = connection.execute(
            "SELECT count(DISTINCT payer_id), count(*) FROM payments"
        ).fetchall()[0]
    invariant(rows == lines, "the run wrote %s payments of %s lines", rows, lines)
    invariant(distinct == payers, "the run saw %s distinct payers, not %s", distinct, payers)
    return MemoryResult(payers, lines, PAYERS_MEMORY_SPAN_S, run, distinct, generate_seconds)


# -- reporting


def _percent(value: float, digits: int = 1) -> str:
    """A share as a percentage, "—" when undefined.

    >>> _percent(0.0123), _percent(float("nan"))
    ('1.2 %', '—')
    """
    return "—" if value != value else f"{100 * value:.{digits}f} %"


def _fixed(value: float) -> str:
    return "—" if value != value else f"{value:.4f}"


def _mib(size: int) -> str:
    return f"{size / 2**20:,.0f} MiB"


_COLUMNS = (
    "population",
    "fraud",
    "legitimate",
    "ROC AUC",
    "avg precision",
    f"recall @{FPR_MAX:.1%} FPR",
    "fraud flagged",
    "false declines",
    "legit in review",
    f"stopped ≤{ATTEMPTS_MAX}",
)


def _cells(row: QualityRow) -> list[str]:
    stopped = f"{row.episodes_stopped}/{row.episodes}" if row.episodes else "—"
    if row.episodes:
        stopped += f" ({_percent(row.episodes_stopped / row.episodes, 0)})"
    return [
        row.population,
        f"{row.fraud:,}",
        f"{row.legitimate:,}",
        _fixed(row.roc_auc),
        _fixed(row.average_precision),
        _percent(row.recall_at_fpr),
        _percent(row.fraud_flagged),
        _percent(row.false_decline_rate, 2),
        _percent(row.legitimate_review_rate, 2),
        stopped,
    ]


def rich_table(title: str, rows: Sequence[QualityRow]) -> Table:
    table = Table(title=title, title_justify="left")
    for index, name in enumerate(_COLUMNS):
        table.add_column(name, justify="left" if index == 0 else "right")
    for row in rows:
        table.add_row(*_cells(row))
    return table


def markdown_table(rows: Sequence[QualityRow], lead: Sequence[str] = ()) -> list[str]:
    head = [*lead, *_COLUMNS]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] * (len(lead) + 1) + ["---:"] * (len(_COLUMNS) - 1)) + "|",
    ]
    return lines + ["| " + " | ".join([*lead, *_cells(row)]) + " |" for row in rows]


def _by_name(rows: Sequence[QualityRow]) -> dict[str, QualityRow]:
    return {row.population: row for row in rows}


def goal_lines(rows: Sequence[QualityRow]) -> list[str]:
    """The goals against pooled figures, as Markdown table rows."""
    named = _by_name(rows)
    payments, everything = named[ALL_PAYMENTS], named[ALL]
    bursts = named["card-testing"]
    burst_share = bursts.episodes_stopped / bursts.episodes if bursts.episodes else float("nan")
    checks = (
        (
            GOALS[0],
            f"{_fixed(payments.roc_auc)} (all payments; {_fixed(everything.roc_auc)} with refund-abuse's refunds)",
            payments.roc_auc >= GOAL_ROC_AUC,
        ),
        (
            GOALS[1],
            f"{bursts.episodes_stopped}/{bursts.episodes} = {_percent(burst_share)}",
            burst_share >= GOAL_BURSTS_STOPPED,
        ),
        (
            GOALS[2],
            _percent(everything.false_decline_rate, 2),
            everything.false_decline_rate <= GOAL_FALSE_DECLINES,
        ),
    )
    return [
        "| goal | measured (pooled) | met |",
        "|---|---|---|",
        *(f"| {goal} | {value} | {'yes' if met else '**no**'} |" for goal, value, met in checks),
    ]


def _code_state() -> str:
    """The commit measured, and any tracked file changed in the working tree."""

    def git(*arguments: str) -> str:
        try:
            done = subprocess.run(
                ["git", *arguments], cwd=SOURCE_ROOT, capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return (
            done.stdout.rstrip() if done.returncode == 0 else ""
        )  # porcelain lines lead with a space

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    changed = [
        line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
    ]
    return f"commit `{commit}`" + (
        f", with uncommitted changes to {', '.join(f'`{name}`' for name in changed)}"
        if changed
        else ", clean working tree"
    )


def _machine() -> str:
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}"


def markdown(result: BenchResult, command: str) -> str:
    """The `SECTION_TITLE` section for BENCHMARKS.md."""
    first = result.seeds[0].log
    seeds = ", ".join(str(seed.log.seed) for seed in result.seeds)
    lines = [
        f"## {SECTION_TITLE}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `{command}` ({result.seconds / 60:.1f} min in all). "
        f"Machine: {_machine()}. Code: {_code_state()}.",
        "",
        f"Logs: seeds {seeds} (never used for tuning, which used {', '.join(map(str, TUNING_SEEDS))}), "
        f"{result.events:,} lines each over {first.duration_s / 3600:.1f} h of event time "
        f"({result.lines_per_s} lines/s, the tuning logs' density), every scenario "
        f"({', '.join(SCENARIOS)}) and the generator's faults. Each replayed by "
        "`centflow run --replay LOG --out DIR --fresh` in its own process; the figures "
        "come from the `payments` table it wrote, joined on event_id to the labels file.",
        "",
        *goal_lines(result.pooled),
        "",
        f"### Pooled ({len(result.seeds)} seeds)",
        "",
        *markdown_table(result.pooled),
        "",
        "### Per seed",
        "",
    ]
    lines += markdown_table([], lead=("seed",))
    for seed in result.seeds:
        lines += markdown_table(seed.rows, lead=(str(seed.log.seed),))[2:]
    lines += [
        "",
        "### Runs",
        "",
        "| seed | lines | labelled events | generate | pipeline run (wall) | events/s, whole process | peak RSS, largest process | peak RSS, worker |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {seed.log.seed} | {seed.log.lines:,} | {seed.log.labels:,} | {seed.log.seconds:.1f} s "
            f"| {seed.run.seconds:.1f} s | {seed.events_per_s:,.0f} | {_mib(seed.run.peak_rss_bytes)} "
            f"| {_mib(seed.run.worker_peak_rss_bytes)} |"
            for seed in result.seeds
        ),
        "",
        *_definitions(),
        "",
    ]
    return "\n".join(lines)


def _definitions() -> list[str]:
    return [
        "Definitions (`centflow/risk/quality.py`): *fraud* counts the labelled events of the "
        "population, *legitimate* the unlabelled payments, which every row compares its fraud "
        "with. ROC AUC counts ties as half (Mann-Whitney); average precision is step-wise, as "
        f"scikit-learn's; recall @{FPR_MAX:.1%} FPR is the largest recall of a threshold among "
        "the observed scores (ties flagged together) that flags at most that share of the "
        "legitimate payments. The rest read decisions: *fraud flagged* is the share of fraud "
        "decided review or decline, *false declines* and *legit in review* the shares of "
        f"legitimate payments declined and held; *stopped ≤{ATTEMPTS_MAX}* counts the episodes "
        f"with a review or decline among their first {ATTEMPTS_MAX} events in event order (the "
        "goal counts card-testing bursts). Refund-abuse's labelled events are refunds, which "
        "the pipeline scores 0 by design (a reversal follows its payment's decision), so "
        "`all payments` leaves them out. Events/s is log lines over the run's wall time, "
        "start-up and the DuckDB load included; peak RSS of the largest process is wait4's "
        "rusage of the run's process tree, the worker's its VmHWM sampled every "
        f"{POLL_S} s.",
    ]


def memory_markdown(result: MemoryResult, command: str) -> str:
    """The `MEMORY_SECTION_TITLE` section for BENCHMARKS.md."""
    peak = max(result.run.peak_rss_bytes, result.run.worker_peak_rss_bytes)
    return "\n".join(
        [
            f"## {MEMORY_SECTION_TITLE}",
            "",
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Command: `{command}`. Machine: {_machine()}. "
            f"Code: {_code_state()}.",
            "",
            f"A synthetic log of {result.lines:,} payments, each from a payer of its own "
            f"({result.distinct_payers:,} distinct payers read back from `payments`), over "
            f"{result.span_s / 3600:.0f} h of event time, replayed by `centflow run --replay`.",
            "",
            "| peak RSS, largest process | peak RSS, worker | goal | met | run (wall) | events/s |",
            "|---:|---:|---:|---|---:|---:|",
            f"| {_mib(result.run.peak_rss_bytes)} | {_mib(result.run.worker_peak_rss_bytes)} "
            f"| {_mib(MEMORY_GOAL_BYTES)} | {'yes' if peak <= MEMORY_GOAL_BYTES else '**no**'} "
            f"| {result.run.seconds:.1f} s | {result.lines / result.run.seconds:,.0f} |",
            "",
        ]
    )


def replace_section(text: str, title: str, section: str) -> str:
    """`text` with its ``## title`` section (up to the next ``#`` or ``##`` heading)
    replaced by `section`, or with `section` appended.

    >>> replace_section("# B\\n\\n## x\\nold\\n\\n## y\\nkeep\\n", "x", "## x\\nnew\\n")
    '# B\\n\\n## x\\nnew\\n\\n## y\\nkeep\\n'
    >>> replace_section("# B\\n", "x", "## x\\nnew\\n")
    '# B\\n\\n## x\\nnew\\n'
    """
    invariant(section.startswith(f"## {title}\n"), "a section starts with its heading")
    lines = text.splitlines(keepends=True)
    heading = f"## {title}"
    starts = [index for index, line in enumerate(lines) if line.rstrip("\n") == heading]
    invariant(len(starts) <= 1, "%r appears %s times", heading, len(starts))
    body = section if section.endswith("\n") else section + "\n"
    if not starts:
        return text.rstrip("\n") + "\n\n" + body
    start = starts[0]
    end = next(
        (index for index in range(start + 1, len(lines)) if lines[index].startswith(("# ", "## "))),
        len(lines),
    )
    after = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + after if after else "")


def _write_section(path: Path, title: str, section: str) -> None:
    old = path.read_text() if path.exists() else "# Benchmarks\n"
    new = replace_section(old, title, section)
    invariant(new.count(f"## {title}\n") == 1, "the section is in %s once", path)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(new)
    temporary.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m centflow.ops.bench_risk", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(BENCH_SEEDS))
    parser.add_argument("--events", type=int, default=EVENTS_DEFAULT, help="lines per log")
    parser.add_argument(
        "--lines-per-s", type=float, default=LINES_PER_S, help="log density (event time)"
    )
    parser.add_argument("--work", type=Path, default=Path("bench-out/risk"))
    parser.add_argument(
        "--write", type=Path, default=None, help="replace (or append) the section in this file"
    )
    parser.add_argument(
        "--payers-memory",
        action="store_true",
        help=f"instead: peak memory with {PAYERS_MEMORY:,} distinct payers",
    )
    parser.add_argument("--payers", type=int, default=PAYERS_MEMORY, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if set(args.seeds) & set(TUNING_SEEDS):
        parser.error(f"seeds {TUNING_SEEDS} are the tuning seeds: benchmark others")
    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds repeats a seed")
    if args.events < 2_000:
        parser.error("--events must be at least 2000 (fewer lines get no fraud episode)")
    if not 0.01 <= args.lines_per_s <= 100_000:
        parser.error("--lines-per-s must be within 0.01..100000")
    if args.payers < 1:
        parser.error("--payers must be positive")
    command = "python -m centflow.ops.bench_risk " + " ".join(argv or sys.argv[1:])
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        if args.payers_memory:
            memory = payers_memory(args.work, args.payers)
            text = memory_markdown(memory, command.strip())
            console.print(text)
            if args.write is not None:
                _write_section(args.write, MEMORY_SECTION_TITLE, text)
            return 0
        result = run_bench(
            args.seeds,
            args.events,
            args.work,
            args.lines_per_s,
            on_seed=lambda seed: _print_seed(console, seed),
        )
    except (ConfigError, InfrastructureError) as error:  # one line; a bug keeps its traceback
        print(f"bench_risk: error: {error}", file=sys.stderr)
        return 2
    console.print(rich_table(f"Pooled, seeds {', '.join(map(str, args.seeds))}", result.pooled))
    console.print("\n".join(goal_lines(result.pooled)))
    console.print(f"bench-risk took {result.seconds / 60:.1f} min")
    if args.write is not None:
        _write_section(args.write, SECTION_TITLE, markdown(result, command.strip()))
        console.print(f"wrote the {SECTION_TITLE!r} section of {args.write}")
    return 0


def _print_seed(console: Console, seed: SeedResult) -> None:
    console.print(rich_table(f"Seed {seed.log.seed}", seed.rows))
    console.print(
        f"seed {seed.log.seed}: {seed.log.lines:,} lines generated in {seed.log.seconds:.1f} s, "
        f"replayed in {seed.run.seconds:.1f} s ({seed.events_per_s:,.0f} events/s, whole process), "
        f"peak RSS {_mib(seed.run.peak_rss_bytes)} (worker {_mib(seed.run.worker_peak_rss_bytes)})"
    )


if __name__ == "__main__":
    raise SystemExit(main())
