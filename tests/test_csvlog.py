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
