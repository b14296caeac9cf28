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


def test_a_bar_shown_in_a_log_ends_on_its_last_state_and_its_own_line(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log)
    monkeypatch.delenv("JAXHASH_PROGRESS", raising=False)
    bar = progress(total=2, desc="training", unit="epoch", leave=False, delay=0.0, file=log)  # as train.ProgressBar asks
    bar.update(1)
    bar.update(1)  # throttled: not shown when it happens
    bar.close()
    print("vae   0.2680", file=log)  # a result row printed next, in the same log
    lines = log.getvalue().split("\n")
    assert "2/2" in lines[-3] and lines[-2] == "vae   0.2680"  # before: the bar's 1/2 and a carriage return, then the row


def test_a_notebook_bar_is_cleared_as_its_caller_asks(monkeypatch):
    log = io.StringIO()  # a notebook's stderr is not a terminal either
    monkeypatch.setattr(sys, "stderr", log)
    import tqdm.auto
    from tqdm.std import tqdm as plain

    class NotebookBar(plain):  # what tqdm.auto picks inside Jupyter (the widget bar)
        pass

    NotebookBar.__module__ = "tqdm.notebook"
    monkeypatch.setattr("jaxhash.progress._has_widgets", lambda: True)  # ipywidgets installed, as on Colab
    monkeypatch.setattr(tqdm.auto, "tqdm", NotebookBar)
    assert progress(total=2, leave=False, file=log).leave is False
    monkeypatch.setattr(tqdm.auto, "tqdm", plain)
    monkeypatch.setitem(sys.modules, "ipykernel", sys)  # merely imported (by another test, a library): not a notebook
    assert progress(total=2, leave=False, file=log).leave is True  # a log keeps the bar's last state on its own line


def test_without_widgets_a_notebook_gets_text_bars_and_no_warning(monkeypatch, recwarn):
    import tqdm.auto
    from tqdm.std import tqdm as plain

    monkeypatch.setattr("jaxhash.progress._has_widgets", lambda: False)
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda *a, **k: (_ for _ in ()).throw(AssertionError("tqdm.auto was used")))
    bar = progress(total=2, file=io.StringIO())
    assert type(bar) is plain and not recwarn.list
    bar.close()
