"""A search under nashmtl@1 on generated NYUv2-format data runs each method with its released settings,
read back from the trials' logged configs in MLflow (issue 23, "done when" 2).  Real Ray and MLflow."""

import textwrap

from mtlsearch.benchmarks.generate import generate

METHODS = ["mgda", "imtl_g", "graddrop", "uw", "famo", "fairgrad"]


def test_nashmtl_search_logs_each_methods_released_settings(tmp_path, ray_session, capsys):
    from mlflow import MlflowClient

    from mtlsearch.launch import main
    from mtlsearch.tracking import TAG_KIND

    generate("nyuv2", tmp_path / "data", train=2, test=1, size=(32, 64), seed=5)
    space = tmp_path / "space.yaml"
    space.write_text(
        textwrap.dedent(
            f"""\
            name: nashmtl-methods
            benchmark: nyuv2
            protocol: nashmtl@1
            objective: {{metric: train/segmentation/loss, mode: min}}
            budget: {{num_samples: 1, max_epochs: 1}}
            scheduler: {{type: fifo}}
            searcher: {{type: random, seed: 0}}
            params:
              method: {{grid: {METHODS}}}
              image_size: 32x64
              mtan_width: 0.125
            """
        )
    )
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    argv = ["--space", str(space), "--data-root", str(tmp_path / "data"), "--gpus-per-trial", "0", "--storage", str(tmp_path / "ray")]
    code = main([*argv, "--tracking-uri", uri, "--experiment", "nashmtl-methods"])
    out = capsys.readouterr()
    assert code == 0, out.out + out.err
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("nashmtl-methods").experiment_id])
    trials = {r.data.params["method"]: r for r in runs if r.data.tags.get(TAG_KIND) == "trial"}
    assert sorted(trials) == sorted(METHODS) and all(r.info.status == "FINISHED" for r in trials.values())
    params = {m: r.data.params for m, r in trials.items()}
    # Shared-parameter gradients for the gradient methods (released: shared_parameters everywhere).
    for method in ("mgda", "imtl_g", "graddrop", "fairgrad"):
        assert params[method]["grad_mode"] == "param", method
    # UW's log-variances in their own Adam group at 0.025 (released: --method-params-lr).
    assert float(params["uw"]["balancing_lr"]) == 0.025 and float(params["uw"]["lr"]) == 1e-4
    # FAMO: the same batch re-evaluated after the step, NYUv2's gamma.
    assert params["famo"]["famo_same_batch"] == "True" and float(params["famo"]["famo_gamma"]) == 0.001
    # FairGrad: alpha 2, clipped at 1.
    assert float(params["fairgrad"]["fairgrad_alpha"]) == 2.0 and float(params["fairgrad"]["fairgrad_max_norm"]) == 1.0
    assert all(p["protocol"] == "nashmtl@1" and p["model"] == "segnet_mtan" for p in params.values())
