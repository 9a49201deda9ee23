"""``jaxrnn mdrnn steps`` prints G, 2G-1, G² and the measured counts; the tour section."""

from jaxrnn.cli import main


def test_steps_table_prints_measured_counts(capsys):
    assert main(["mdrnn", "steps", "--max-g", "5"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    rows = [[int(v) for v in line.split()] for line in lines[1:]]
    assert rows == [[g, 2 * g - 1, 2 * g - 1, g * g, g * g] for g in range(1, 6)]


def test_steps_rejects_a_non_positive_max_g(capsys):
    assert main(["mdrnn", "steps", "--max-g", "0"]) == 2
    assert "--max-g: expected a positive integer, got 0" in capsys.readouterr().err
