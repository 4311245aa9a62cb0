from srcore.csvlog import CsvLog


def test_a_resumed_log_keeps_the_rows_up_to_its_step_and_drops_a_torn_line(tmp_path):
    path = tmp_path / "train.csv"
    log = CsvLog(path, ["step", "loss"])
    log.start(0)
    for step in (10, 20, 30):
        log.append({"step": step, "loss": 1 / step})
    with open(path, "a") as f:
        f.write("4")  # a line cut short by a killed process
    CsvLog(path, ["step", "loss"]).start(20)
    assert path.read_text() == "step,loss\n10,0.1\n20,0.05\n"
    CsvLog(path, ["step", "loss", "lr"]).start(20)  # other columns: another run's log
    assert path.read_text() == "step,loss,lr\n"
    log.start(0)
    assert path.read_text() == "step,loss\n"


def test_a_resumed_log_is_written_from_the_text_its_state_saved_whatever_the_file_holds(
        tmp_path):
    """After the run was interrupted the file may be another run's (`git checkout`, `dvc
    checkout`, `dvc exp apply`), cut short, or gone: the rows up to the resumed step come from
    the text the state saved, not from the file."""
    path, columns = tmp_path / "train.csv", ["step", "loss"]
    log = CsvLog(path, columns)
    log.start(0)
    for step in (10, 20):
        log.append({"step": step, "loss": 1 / step})
    saved = log.text()
    assert saved == path.read_text() == "step,loss\n10,0.1\n20,0.05\n"
    for found in ("step,loss\n10,9\n20,9\n30,9\n", "step,loss\n10,0.1\n2", None):
        if found is None:
            path.unlink()
        else:
            path.write_text(found)
        resumed = CsvLog(path, columns)
        resumed.start(20, saved)
        assert path.read_text() == resumed.text() == saved
        resumed.append({"step": 30, "loss": 1 / 30})
        assert path.read_text() == resumed.text() == saved + "30,0.0333333\n"
    CsvLog(path, columns).start(0, saved)  # a fresh run: the header only, whatever it is given
    assert path.read_text() == "step,loss\n"
