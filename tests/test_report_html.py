"""The HTML reconciliation report (`centflow.recon.html`): deterministic, self-contained,
exact, and drawn by a real browser.

One replay of the shipped sample log is shared by the module: its database as the
run left it (no statement) and a copy with a simulated statement imported and
matched. The browser is Debian's ``chromium``, installed here when it is missing
and we are root; the browser tests skip, naming the reason, only when it cannot be.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import duckdb
import numpy as np
import pytest

from centflow.recon.html import (
    ALONE_COLOUR,
    CLASS_COLOURS,
    DECISION_COLOURS,
    NETTED_COLOUR,
    VOLUME_COLOUR,
    render_report,
    write_report,
)
from centflow.recon.svg import amount_text

REPO = Path(__file__).resolve().parent.parent
SAMPLE_LOG = REPO / "replay_data" / "sample.jsonl.gz"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
WINDOW = (1280, 2000)
TALL_WINDOW = (1280, 4000)  # the whole risk row, wherever the panels above end
RISK_ROW = re.compile(
    r'<div class="row" id="risk">.*?(?=<section class="panel"><h2>Most flagged)', re.S
)
INSTALL_TIMEOUT_S = 900
BROWSER_TIMEOUT_S = 120
COLOUR_TOLERANCE = 6  # per channel: solid SVG fills come out exact but for their edges
CHART_PIXELS_MIN = 400  # above a legend swatch (10 x 10), so only a drawn chart reaches it


@pytest.fixture(scope="module")
def run_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OUT of a replay of the sample log (1 h windows, as `make run`)."""
    out = tmp_path_factory.mktemp("report") / "out"
    result = subprocess.run(
        [sys.executable, "-m", "centflow", "run", "--replay", str(SAMPLE_LOG), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def matched(run_out: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the run's database with a simulated statement imported and matched."""
    from centflow.recon.matching import reconcile
    from centflow.recon.simulate import simulate_statement
    from centflow.recon.statements import import_statement

    folder = tmp_path_factory.mktemp("matched")
    database = folder / "centflow.duckdb"
    shutil.copy(run_out / "centflow.duckdb", database)
    simulation = simulate_statement(
        database, folder / "statement.xml", seed=3, break_share=0.2, format="camt.053"
    )
    import_statement(folder / "statement.xml", database)
    reconcile(database, simulation.as_of, simulation.grace_days)
    return database


def test_the_same_data_gives_the_same_bytes(matched: Path, tmp_path: Path) -> None:
    """Two renders, and a copy of the database elsewhere, give byte-identical files."""
    first = write_report(matched, tmp_path / "first.html").read_bytes()
    second = write_report(matched, tmp_path / "second.html").read_bytes()
    elsewhere = tmp_path / "elsewhere" / "centflow.duckdb"
    elsewhere.parent.mkdir()
    shutil.copy(matched, elsewhere)
    assert first == second == write_report(elsewhere, tmp_path / "third.html").read_bytes()
    assert first.decode() == render_report(matched)
    assert not list(tmp_path.glob(".*.tmp"))  # the temporary name is gone


def test_the_page_loads_nothing(matched: Path) -> None:
    """No URL at all, so nothing to fetch: no script, stylesheet, image, frame or font."""
    page = render_report(matched)
    for forbidden in ("http://", "https://", "//", "<script", "<link", "<img", "<iframe", "src=",
                      "url(", "@import", "@font-face"):  # fmt: skip
        assert forbidden not in page.replace("<!DOCTYPE html>", ""), forbidden
    assert "default-src 'none'" in page  # and the browser is told to refuse any fetch
    assert page.count("<svg") >= 6


def test_amounts_are_the_exact_decimals(matched: Path) -> None:
    """Every currency's gross, fees and ledger debits appear exactly as DuckDB sums them."""
    page = render_report(matched)
    with duckdb.connect(str(matched), read_only=True) as db:
        sums = db.execute(
            "SELECT currency, sum(gross), sum(fees) FROM settlement_batches GROUP BY ALL"
        ).fetchall()
        debits = db.execute("SELECT debits FROM recon_ledger_balance").fetchall()
        breaks = db.execute("SELECT difference FROM recon_breaks").fetchall()
    assert sums and breaks
    for currency, gross, fees in sums:
        assert f"{currency}: gross {amount_text(gross)}<" in page
        assert f">{amount_text(fees)}<" in page
    for (value,) in debits:
        assert f">{amount_text(value)}<" in page
    for (difference,) in breaks[:50]:
        assert f">{amount_text(difference)}<" in page
    with duckdb.connect(str(matched), read_only=True) as db:
        decided = db.execute(
            "SELECT decision, currency, sum(amount) FROM payments WHERE type = 'payment' "
            "GROUP BY ALL"
        ).fetchall()
    assert decided
    for decision, currency, amount in decided:  # per decision, one line per currency
        assert re.search(
            rf"<td>{decision}</td>.*?[>]{re.escape(amount_text(amount))} {currency}[<]", page
        ), (decision, currency)
    assert amount_text(Decimal("1234567.890000")) == "1,234,567.89"


def test_without_a_statement_the_page_says_so(run_out: Path) -> None:
    page = render_report(run_out / "centflow.duckdb")
    assert "No statement matched" in page
    assert "Breaks by class" not in page
    assert page.count("<svg") >= 4  # volume, decisions, unit economics still drawn


def test_recon_html_writes_the_report(run_out: Path, matched: Path, tmp_path: Path) -> None:
    """`centflow recon --out OUT --html FILE` reloads OUT and writes the page it renders."""
    out = tmp_path / "out"
    shutil.copytree(run_out, out, ignore=shutil.ignore_patterns("*.lock"))
    shutil.copy(matched, out / "centflow.duckdb")
    page = tmp_path / "page" / "report.html"
    result = subprocess.run(
        [sys.executable, "-m", "centflow", "recon", "--out", str(out), "--html", str(page)],
        capture_output=True, text=True, timeout=300, check=False, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"HTML report: {page}" in result.stdout
    assert page.read_text() == render_report(out / "centflow.duckdb")
    assert "Breaks by class" in page.read_text()  # the reload kept the matched statement


# The browser --------------------------------------------------------------------


def _install_chromium() -> str | None:
    """Install Debian's chromium; None when it is there, else why it cannot be."""
    if os.geteuid() != 0:
        return f"{CHROMIUM} is missing and installing it needs root (apt-get install chromium)"
    if shutil.which("apt-get") is None:
        return f"{CHROMIUM} is missing and this machine has no apt-get to install it"
    environment = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
    output = ""
    for commands in ([install], [["apt-get", "update"], install]):
        for command in commands:
            result = subprocess.run(
                command, capture_output=True, text=True, env=environment,
                timeout=INSTALL_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
            )  # fmt: skip
            output = result.stdout[-500:] + result.stderr[-500:]
        if CHROMIUM.exists():
            return None
    return f"apt-get install chromium failed: {' '.join(output.split())[-300:]}"


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.exists():
        reason = _install_chromium()
        if reason is not None:
            pytest.skip(reason)
    return CHROMIUM


def _browse(
    browser: Path, page: Path, profile: Path, *action: str, window: tuple[int, int] = WINDOW
) -> subprocess.CompletedProcess:
    width, height = window
    return subprocess.run(
        [str(browser), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *action,
         f"--window-size={width},{height}", page.resolve().as_uri()],
        capture_output=True, timeout=BROWSER_TIMEOUT_S, check=False, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def _rgb(colour: str) -> np.ndarray:
    return np.array([int(colour[index : index + 2], 16) for index in (1, 3, 5)], dtype=np.int16)


def _pixels_of(image: np.ndarray, colour: str) -> int:
    close = np.abs(image.astype(np.int16) - _rgb(colour)) <= COLOUR_TOLERANCE
    return int(close.all(axis=2).sum())


def test_chromium_draws_the_charts(matched: Path, chromium: Path, tmp_path: Path) -> None:
    """A headless screenshot is not blank and shows every chart in its colours."""
    from PIL import Image

    page = write_report(matched, tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    result = _browse(chromium, page, tmp_path / "profile", f"--screenshot={shot}")
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as picture:
        assert picture.size == WINDOW
        image = np.asarray(picture.convert("RGB"))
    background = np.all(image >= 245, axis=2).mean()
    assert background < 0.9, f"{background:.0%} of the screenshot is blank"
    assert len(np.unique(image.reshape(-1, 3), axis=0)) > 50  # text, charts, tables
    with duckdb.connect(str(matched), read_only=True) as db:
        decisions = {
            row[0] for row in db.execute("SELECT DISTINCT decision FROM payments").fetchall()
        }
        classes = {
            row[0] for row in db.execute("SELECT DISTINCT class FROM recon_breaks").fetchall()
        }
    assert classes, "the simulated statement should have breaks to draw"
    colours = {
        "settled volume": VOLUME_COLOUR,
        "fees alone": ALONE_COLOUR,
        "fees netted": NETTED_COLOUR,
    }
    colours |= {f"decision {name}": DECISION_COLOURS[name] for name in decisions}
    colours |= {f"break class {name}": CLASS_COLOURS[name] for name in classes}
    drawn = {name: _pixels_of(image, colour) for name, colour in colours.items()}
    assert all(count >= CHART_PIXELS_MIN for count in drawn.values()), drawn


def _screenshot(browser: Path, page: Path, folder: Path, window: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    shot = folder / f"{page.stem}.png"
    result = _browse(browser, page, folder / f"profile-{page.stem}", f"--screenshot={shot}",
                     window=window)  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as picture:
        assert picture.size == window
        return np.asarray(picture.convert("RGB"))


def test_chromium_draws_the_risk_charts(matched: Path, chromium: Path, tmp_path: Path) -> None:
    """The risk row (decisions by class, the score distribution per decision) is drawn in
    each decision's colour: the page against the same page without that row, so the
    decisions-over-time charts above it count in both."""
    text = render_report(matched)
    assert len(RISK_ROW.findall(text)) == 1
    page = tmp_path / "page.html"
    page.write_text(text)
    without = tmp_path / "without.html"
    without.write_text(RISK_ROW.sub("", text))
    with duckdb.connect(str(matched), read_only=True) as db:
        decisions = {
            row[0]
            for row in db.execute(
                "SELECT DISTINCT decision FROM payments WHERE type = 'payment'"
            ).fetchall()
        }
    assert decisions == set(DECISION_COLOURS), "the sample should have every decision"
    images = {
        name: _screenshot(chromium, path, tmp_path, TALL_WINDOW)
        for name, path in (("page", page), ("without", without))
    }
    drawn = {
        name: _pixels_of(images["page"], DECISION_COLOURS[name])
        - _pixels_of(images["without"], DECISION_COLOURS[name])
        for name in decisions
    }
    # the score charts alone, each on its own scale, are taller than CHART_PIXELS_MIN
    assert all(count >= CHART_PIXELS_MIN for count in drawn.values()), drawn


def test_chromium_renders_every_svg(matched: Path, chromium: Path, tmp_path: Path) -> None:
    """The DOM the browser built holds every chart, each with its bars."""
    page = write_report(matched, tmp_path / "report.html")
    result = _browse(chromium, page, tmp_path / "profile", "--dump-dom")
    assert result.returncode == 0, result.stderr[-2000:]
    dom = result.stdout.decode()
    charts = re.findall(r"<svg class=\"chart\".*?</svg>", dom, flags=re.S)
    assert len(charts) == page.read_text().count('<svg class="chart"')
    assert all("<rect" in chart for chart in charts)
    # the risk row: decisions by class, then one score chart per decision, in its colour
    with duckdb.connect(str(matched), read_only=True) as db:
        per_decision = dict(
            db.execute(
                "SELECT decision, count(*) FROM payments WHERE type = 'payment' GROUP BY ALL"
            ).fetchall()
        )
    labels = [re.search(r'aria-label="([^"]*)"', chart).group(1) for chart in charts]  # type: ignore[union-attr]
    assert "payments per decision" in labels
    for decision, colour in DECISION_COLOURS.items():
        label = f"{decision}: {per_decision.get(decision, 0):,} payments"
        (chart,) = [chart for chart, name in zip(charts, labels, strict=True) if name == label]
        assert chart.count("<rect") == 10  # a column per score bucket, empty ones included
        if per_decision.get(decision):
            assert f'fill="{colour}"' in chart
