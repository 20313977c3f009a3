"""The HTML report: content, escaping, size, missing results, overlays, and a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from nas._cli import main
from reports import ReportError, load_run, load_runs, write_report
from reports._content import ArchNames
from reports._figures import pareto_figure
from tests.reports_tests.conftest import HOSTILE, MakeRun

SIX_MB = 6 * 2**20


def _open(browser: object, path: Path, screenshot: Path) -> tuple[object, list[str], list[str]]:
    """Opens ``path`` in a new page; returns the page, console errors and every request."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    errors: list[str] = []
    requests: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.wait_for_function("() => document.querySelectorAll('.main-svg').length > 0")
    page.screenshot(path=str(screenshot), full_page=True)
    return page, errors, requests


PLOTTED = """() => {
  const gd = document.getElementById('pareto-plot');
  const traces = Array.from(gd.querySelectorAll('.scatterlayer .trace'));
  return gd.data.map((t, i) => [t.name, t.meta, traces[i].querySelectorAll('path.point').length]);
}"""


def test_report_renders_in_chromium_with_every_trial_plotted(
    run_factory: MakeRun, browser: object, tmp_path: Path
) -> None:
    root = run_factory("plain", trials=24, failures=2)
    path = write_report([root])
    assert path == root / "report.html"
    page, errors, requests = _open(browser, path, tmp_path / "report.png")
    assert errors == []
    assert requests and all(u.startswith("file://") for u in requests), requests
    plotted = page.evaluate(PLOTTED)  # type: ignore[attr-defined]
    trial_points = sum(n for _, meta, n in plotted if meta == "trials")
    trials = pd.read_parquet(root / "trials.parquet")
    assert trial_points == (trials["state"] == "COMPLETE").sum() == 22
    front = pd.read_csv(root / "pareto.csv")
    assert [n for _, meta, n in plotted if meta == "front"] == [len(front)]
    assert len(front) >= 2
    deployed = pd.read_csv(root / "deployed_pareto.csv")
    assert [n for _, meta, n in plotted if meta == "deployed"] == [len(deployed)]
    assert len(deployed) >= 2
    # every figure drew: Pareto, hypervolume, and per model a waterfall and a latency plot
    figures = page.evaluate("() => document.querySelectorAll('.plot .main-svg').length")  # type: ignore[attr-defined]
    assert figures >= 2 + 2 * front["arch"].nunique() - 2
    # tables: one row per trial, the failed ones with their reason
    rows = page.locator("#trials-table tbody tr")  # type: ignore[attr-defined]
    assert rows.count() == len(trials)
    page.select_option("#state-filter", "FAIL")  # type: ignore[attr-defined]
    assert page.locator("#trials-table tbody tr:visible").count() == 2  # type: ignore[attr-defined]
    assert "simulated out of memory" in page.locator("#trials-table tbody tr:visible").first.inner_text()  # type: ignore[attr-defined]
    # sorting the Pareto table by latency puts the fastest first
    page.click("#pareto-table thead th:nth-child(3)")  # type: ignore[attr-defined]
    first = page.locator("#pareto-table tbody tr").first.locator("td").nth(2).inner_text()  # type: ignore[attr-defined]
    assert float(first) == pytest.approx(front["latency_ms"].min(), rel=1e-3)
    # a latency budget picks the most accurate deployed model within it
    page.fill("#budget", "10")  # type: ignore[attr-defined]
    assert page.inner_text("#budget-answer").startswith("ship ")  # type: ignore[attr-defined]
    assert (tmp_path / "report.png").stat().st_size > 10_000
    # printed to PDF: the controls are hidden, the plots are still there
    page.emulate_media(media="print")  # type: ignore[attr-defined]
    assert not page.is_visible("#budget") and page.is_visible("#pareto-plot .main-svg")  # type: ignore[attr-defined]
    pdf = page.pdf(path=str(tmp_path / "report.pdf"), format="A4")  # type: ignore[attr-defined]
    assert pdf.startswith(b"%PDF") and len(pdf) > 50_000


def test_hostile_strings_render_as_text(run_factory: MakeRun, browser: object, tmp_path: Path) -> None:
    root = run_factory("hostile", trials=8, failures=1, name=HOSTILE, error=HOSTILE)
    path = write_report([root])
    html = path.read_text()
    assert "<script>window.__pwned" not in html and '<img src="x"' not in html
    assert "&lt;script&gt;window.__pwned" in html
    page, errors, requests = _open(browser, path, tmp_path / "hostile.png")
    assert page.evaluate("() => window.__pwned") is None  # type: ignore[attr-defined]
    assert all(u.startswith("file://") for u in requests), requests  # no <img src="x"> fetched
    assert errors == []
    assert HOSTILE in page.inner_text("h1")  # type: ignore[attr-defined]
    assert HOSTILE in page.inner_text("#trials-table")  # type: ignore[attr-defined]


def test_report_without_compression_says_why(run_factory: MakeRun, browser: object, tmp_path: Path) -> None:
    root = run_factory("uncompressed", trials=12, failures=0, compressed=False)
    assert main(["report", str(root)]) == 0
    page, errors, _ = _open(browser, root / "report.html", tmp_path / "uncompressed.png")
    assert errors == []
    text = page.inner_text("body")  # type: ignore[attr-defined]
    assert "compression is switched off in this run's config (compress.enabled: false)" in text
    assert "No compression results, so these are the search's models" in text
    assert page.locator("#models article").count() == pd.read_csv(root / "pareto.csv")["arch"].nunique()  # type: ignore[attr-defined]


def test_two_runs_overlay_on_one_page(run_factory: MakeRun, browser: object, tmp_path: Path) -> None:
    a = run_factory("plain", trials=24, failures=2)
    b = run_factory("other-seed", trials=16, failures=0, seed=1)
    out = tmp_path / "both.html"
    assert main(["report", str(a), str(b), "-o", str(out)]) == 0
    page, errors, _ = _open(browser, out, tmp_path / "both.png")
    assert errors == []
    plotted = page.evaluate(PLOTTED)  # type: ignore[attr-defined]
    assert sum(n for _, meta, n in plotted if meta == "trials") == 22 + 16
    assert {name.split(":")[0] for name, meta, _ in plotted if meta == "trials"} == {"plain", "other-seed"}
    # links stay relative to the page, and point at real files
    hrefs = page.eval_on_selector_all("a[href$='.onnx'], a[href$='.parquet']", "els => els.map(e => e.getAttribute('href'))")  # type: ignore[attr-defined]
    assert hrefs and all(not h.startswith(("/", "file:")) and (out.parent / h).exists() for h in hrefs)


@pytest.mark.parametrize("objectives, pairs", [
    ("{accuracy: max, latency_ms: min, params: min}", 3), ("{accuracy: max}", 0),
])
def test_any_number_of_objectives_is_plotted(run_factory: MakeRun, objectives: str, pairs: int) -> None:
    root = run_factory(f"objectives-{pairs}", trials=10, failures=0, compressed=False,
                       overrides=(f"search.objectives={objectives}",))
    [run] = load_runs([root])
    figure, points = pareto_figure([run], ArchNames())
    assert sum(points.values()) == 10
    menus = figure.layout.updatemenus
    assert (len(menus[0].buttons) if menus else 0) == pairs
    assert write_report([root]).stat().st_size > 0


def test_two_hundred_trials_stay_under_six_megabytes(run_factory: MakeRun) -> None:
    root = run_factory("large", trials=200, failures=5)
    size = write_report([root]).stat().st_size
    assert size < SIX_MB, f"{size / 2**20:.2f} MB"


def test_report_is_self_contained(run_factory: MakeRun) -> None:
    from plotly.offline import get_plotlyjs

    html = write_report([run_factory("plain", trials=24, failures=2)]).read_text()
    assert html.count(get_plotlyjs()) == 1  # plotly.js inline, once
    html = html.replace(get_plotlyjs(), "")  # its own code names its web site in strings
    assert re.search(r"""(src|href)=["']?(https?:)?//""", html) is None
    assert "cdn.plot.ly" not in html and "<link" not in html
    assert "Plotly.newPlot" in html


def test_report_of_a_directory_without_a_run_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ReportError, match="no config.yaml"):
        load_run(tmp_path)
    assert main(["report", str(tmp_path)]) == 2


def test_budgets_step_only_through_models_that_gain_accuracy(run_factory: MakeRun, tmp_path: Path) -> None:
    from reports._content import recommendations

    [run] = load_runs([run_factory("plain", trials=24, failures=2)])
    run.deployed = pd.DataFrame({
        "model_id": ["a", "b", "c"], "stage": "int8", "artifact": "",
        "accuracy": [0.95, 0.94, 0.97], "latency_ms": [0.10, 0.12, 0.20],  # b is slower and worse
    })
    rows, _ = recommendations(run, tmp_path)
    assert [r["model"] for r in rows] == ["a", "c"]
    assert rows[0]["budget"] == "0.1000 ms to 0.2000 ms" and rows[1]["budget"] == "0.2000 ms or more"


def test_a_slower_int8_is_never_recommended_and_the_page_says_why(
    run_factory: MakeRun, tmp_path: Path
) -> None:
    from reports._content import decision, recommendations

    root = run_factory("int8-slower", trials=24, failures=0, int8_slower=True)
    [run] = load_runs([root])
    rows, _ = recommendations(run, tmp_path)
    assert rows and all(r["stage"] in ("baseline", "distilled") for r in rows)
    assert all(r["artifact"].endswith(f"{r['stage']}.onnx") for r in rows)
    assert all("int8 was slower on this profile" in r["why"] for r in rows)
    model = next(r["model"] for r in rows if r["stage"] == "distilled")
    sentence = decision(run, model)
    assert sentence.startswith("Ships distilled.onnx") and "int8 was slower" in sentence
    out = tmp_path / "report.html"
    write_report([root], out)
    html = out.read_text()
    assert "model.int8.onnx</a>" not in html.split('id="recommendation"')[1].split("</section>")[0]
    assert "Ships distilled.onnx" in html


def test_a_stage_the_device_could_not_confirm_is_named_and_a_flagged_latency_said(
    run_factory: MakeRun, tmp_path: Path
) -> None:
    from nas._rundir import RunDir
    from pareto import choose_deployed
    from reports._content import decision

    root = run_factory("unconfirmed", trials=24, failures=0, int8_slower=True)
    frame = pd.read_parquet(root / "compression.parquet")
    model = str(frame["model_id"].iloc[0])
    mine = frame["model_id"] == model
    # as the pipeline records it: the distilled stage never compared reliably, and the
    # baseline, which ships instead, with its own figure flagged
    note = "busy device: other processes used 1.50 of 2 cores, above max_load 0.25"
    frame["latency_reliable"], frame["latency_note"] = True, ""
    distilled = mine & (frame["stage"] == "distilled")
    baseline = mine & (frame["stage"] == "baseline")
    frame.loc[distilled, "status"] = "unconfirmed"
    frame.loc[distilled, "reason"] = "measured side by side 3 times, but never reliably"
    frame.loc[distilled | baseline, "latency_reliable"] = False
    frame.loc[distilled | baseline, "latency_note"] = note
    frame.loc[mine, "deployed"] = False
    frame.loc[choose_deployed(frame[mine]), "deployed"] = True
    RunDir(root).write_frame(root / "compression.parquet", frame)
    [run] = load_runs([root])
    sentence = decision(run, model)
    assert sentence.startswith("Ships baseline.onnx"), sentence
    assert "distilled could not be measured reliably on this profile" in sentence
    assert f"its latency could not be measured reliably ({note})" in sentence
    # the other model, measured reliably, says nothing of it
    other = str(frame.loc[~mine, "model_id"].iloc[0])
    assert "reliably" not in decision(run, other)
    out = tmp_path / "report.html"
    write_report([root], out)
    html = out.read_text()
    assert "latency not measured reliably: busy device" in html


def test_trials_with_an_unreliable_latency_stay_off_the_front_and_say_so(
    run_factory: MakeRun, tmp_path: Path
) -> None:
    from tests.reports_tests.conftest import UNRELIABLE_NOTE

    root = run_factory("unreliable", trials=12, failures=0, compressed=False, unreliable=2)
    trials = pd.read_parquet(root / "trials.parquet")
    doubtful = trials[~trials["latency_reliable"]]
    assert len(doubtful) == 2 and (doubtful["accuracy"] == trials["accuracy"].max()).all()
    front = pd.read_csv(root / "pareto.csv")
    assert not set(doubtful["number"]) & set(front["number"])  # they would dominate it all
    [run] = load_runs([root])
    _, points = pareto_figure([run], ArchNames())
    assert points["latency not measured reliably (off the front)"] == 2
    out = tmp_path / "report.html"
    write_report([root], out)
    html = out.read_text()
    assert html.count("latency not measured reliably, off the front: " + UNRELIABLE_NOTE) == 2


def test_a_damaged_data_record_is_written_again_or_named_where_it_cannot_be(
    run_factory: MakeRun, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_factory("plain", trials=24, failures=2), run)
    (run / "data.json").write_text('{"train": 12')  # cut short
    elsewhere = tmp_path / "elsewhere.html"
    assert main(["report", str(run), "-o", str(elsewhere)]) == 0  # the run is not written
    assert "data.json is damaged and was not read" in elsewhere.read_text(encoding="utf-8")
    assert (run / "data.json").read_text() == '{"train": 12'
    assert main(["report", str(run)]) == 0  # written into the run: it holds the run's lock
    assert "data.json was damaged: written again" in " ".join(capsys.readouterr().out.split())
    info = json.loads((run / "data.json").read_text())
    assert info["train"] > 0 and info["classes"] == [str(i) for i in range(10)]
    assert "data.json is damaged" not in (run / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("record", ["stages.json", "environment.json"])
def test_a_damaged_record_is_refused_naming_it(run_factory: MakeRun, tmp_path: Path,
                                               record: str) -> None:
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_factory("plain", trials=24, failures=2), run)
    (run / record).write_text("[1, 2")
    with pytest.raises(ReportError, match=rf"{record}: damaged .*Restore it from a backup"):
        load_run(run)
    assert main(["report", str(run), "-o", str(tmp_path / "r.html")]) == 2
