"""The speed benchmark's quick mode: every path runs and learns something (speed is measured by the script itself,
never asserted here — see benchmarks/kd_speed.py and benchmarks/RESULTS.md)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "kd_speed.py"


def test_kd_speed_quick_mode_runs_every_path(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("kd_speed", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--device", "cpu", "--out", str(tmp_path / "r.json")])
    assert json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(result))
    paths = {(r["student"], r["path"]) for r in result["rows"]}
    assert paths == {(s, p) for s in bench.STUDENTS for p in ("tutorial", "fit, 0.9 defaults", "fit, defaults",
                                                            "fit, teacher=", "fit, fast")}
    for r in result["rows"]:  # 1,024 images, 2 epochs: well above chance (10%) on 2,000 test images
        assert 0.2 < r["test_acc"] <= 1 and r["seconds_per_epoch"] > 0, r
    assert result["train_images"] == 1024 and "fit, fast" in capsys.readouterr().out
