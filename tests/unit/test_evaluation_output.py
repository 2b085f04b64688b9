"""Each evaluation writes to a directory of its own, also when two start in the same second
(the admin's run and `manage.py evaluate`, say)."""
from relevance.evaluation import new_output_dir


def test_two_evaluations_of_one_second_get_two_directories(tmp_path):
    first = new_output_dir(tmp_path / "evaluations", "scifact-20261204-214331")
    second = new_output_dir(tmp_path / "evaluations", "scifact-20261204-214331")
    assert first.name == "scifact-20261204-214331" and second.name == "scifact-20261204-214331-2"
    assert first.is_dir() and second.is_dir()
    (first / "metrics.json").write_text("{}")
    assert not (second / "metrics.json").exists()
