"""The start line and the last run's wall time, from known records."""

from __future__ import annotations

import io

from specguard.plugin.progress import Progress, last_run_seconds, plan_line


def test_plan_line_with_and_without_history() -> None:
    assert plan_line(6, 4, 3, None) == "specguard: 6 cells (4 speculative) on 3 servers"
    assert plan_line(1, 0, 1, 539.0) == ("specguard: 1 cells (0 speculative) on 1 server; "
                                         "the last run of this matrix here took about 9 min")
    assert plan_line(2, 1, 2, 10.0).endswith("about 1 min")


def test_last_run_is_the_latest_earlier_run_first_to_last_record() -> None:
    records = [
        {"run": "a", "time": "2026-12-01T10:00:00+00:00"},
        {"run": "a", "time": "2026-12-01T10:30:00+00:00"},
        {"run": "b", "time": "2026-12-01T11:00:00+00:00"},
        {"run": "b", "time": "2026-12-01T11:07:30+00:00"},
        {"run": "now", "time": "2026-12-01T12:00:00+00:00"},
        {"run": "b", "time": "not a time"},
        {"kind": "no run"},
    ]
    assert last_run_seconds(records, "now") == 450.0
    assert last_run_seconds(records[:2], "now") == 1800.0
    assert last_run_seconds(records[4:], "now") is None


def test_the_bar_stays_off_a_stream_that_is_not_a_terminal() -> None:
    out = io.StringIO()
    p = Progress(3, stream=out)
    p.requests("cell")(1, 4)
    p.cell_done()
    p.close()
    assert out.getvalue() == ""
    assert p.bar.disable
