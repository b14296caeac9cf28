import io
import sys
import time

from jaxhash.progress import progress


def test_a_log_gets_no_bar_for_short_work_and_a_throttled_one_for_long_work(monkeypatch):
    log = io.StringIO()  # not a terminal: where the bars of a log or CI go
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.delenv("JAXHASH_PROGRESS", raising=False)  # the tests run without bars (conftest)
    for _ in progress(range(3), desc="reading photos", leave=False, file=log):
        pass
    assert log.getvalue() == ""  # before, "reading photos: 0it" and a clearing line
    bar = progress(range(3), desc="training", delay=0.0, mininterval=0.0, file=log)
    for _ in bar:
        time.sleep(0.001)
    bar.close()
    assert "training: 100%" in log.getvalue()
    monkeypatch.setenv("JAXHASH_PROGRESS", "0")
    log.truncate(0)
    log.seek(0)
    for _ in progress(range(3), desc="off", delay=0.0, file=log):
        pass
    assert log.getvalue() == ""
