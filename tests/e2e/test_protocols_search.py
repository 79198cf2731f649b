"""`mtlsearch reproduce` run for real: the seeds under one parent run and the comparison (the protocols' unit tests: tests/unit/test_protocols.py)."""

import numpy as np

from mtlsearch.benchmarks.generate import generate

from helpers.protocols import NYU_ORDER


def test_reproduce_runs_the_seeds_under_one_parent_run_and_prints_the_comparison(tmp_path, ray_session, capsys):
    from mlflow import MlflowClient

    from mtlsearch.reproduce import main
    from mtlsearch.tracking import PARENT_TAG, TAG_KIND, TAG_PROTOCOL

    generate("nyuv2", tmp_path / "data", train=3, test=2, size=(32, 64), seed=3)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(
        [
            "--protocol",
            "nashmtl",
            "--benchmark",
            "nyuv2",
            "--method",
            "famo",
            "--data-root",
            str(tmp_path / "data"),
            "--seeds",
            "0",
            "1",
            "--epochs",
            "2",
            "--last-k",
            "2",
            "--set",
            "image_size=32x64",
            "--set",
            "mtan_width=0.125",
            "--gpus-per-trial",
            "0",
            "--storage",
            str(tmp_path / "ray"),
            "--tracking-uri",
            uri,
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    budget = out.index("Budget: 2 trial(s) (seeds 0 1) x 2 epochs = 4 epochs")
    assert "estimated" in out and budget < out.index("Ours vs published: famo on nyuv2 under nashmtl@1")
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("reproduce-nashmtl-nyuv2").experiment_id])
    parent = [r for r in runs if r.data.tags.get(TAG_KIND) == "search"]
    trials = [r for r in runs if r.data.tags.get(TAG_KIND) == "trial"]
    assert len(parent) == 1 and len(trials) == 2
    assert parent[0].data.tags[TAG_PROTOCOL] == "nashmtl@1"
    assert all(r.data.tags[PARENT_TAG] == parent[0].info.run_id and r.data.tags[TAG_PROTOCOL] == "nashmtl@1" for r in trials)
    assert sorted(r.data.params["seed"] for r in trials) == ["0", "1"]
    assert all(r.data.params["model"] == "segnet_mtan" and r.data.params["protocol"] == "nashmtl@1" for r in trials)
    # The Δm row: the mean over seeds of each seed's final test/delta_m_nashmtl (its last-2 mean),
    # beside FAMO's published -4.10, the difference and the verdict.
    finals = [r.data.metrics["test/delta_m_nashmtl"] for r in trials]
    mean = float(np.mean(finals))
    row = next(line for line in out.splitlines() if line.startswith("delta_m_nashmtl % (protocol's: all metrics, lower is better)"))
    assert f"{mean:.2f} ± {np.std(finals, ddof=1):.2f}" in row and "-4.1" in row and f"{mean + 4.10:+.2f}" in row
    for t, m in NYU_ORDER:
        assert any(line.startswith(f"{t}/{m} (") for line in out.splitlines())
    # Both --set applied (action='append'), and every override refuses the verdict, numbers printed.
    assert all(r.data.params["image_size"] == "32x64" and r.data.params["mtan_width"] == "0.125" for r in trials)
    assert "No verdict: the protocol was overridden (--epochs 2, --last-k 2, --set image_size=32x64, --set mtan_width=0.125)" in out
    assert f"delta_m_nashmtl {mean:.2f} (95% interval [" in out and "vs published -4.10 (FAMO Table 1 (NYU-v2, Δm% column))" in out
    assert "Verdict:" not in out
    assert "The second epoch (" in out and "mostly warm-up, is not used" in out
