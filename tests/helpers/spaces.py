"""Small search spaces more than one tier uses (their tests say what each is for)."""

#: tests/unit/test_fairness.py and tests/e2e/test_fairness_search.py (a format string).
FAIRNESS_SPACE = """
name: fair
benchmark: synthetic
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: {samples}, max_epochs: {epochs}{concurrency}}}
scheduler: {scheduler}
searcher: {searcher}
params:
{params}
"""

#: tests/unit/test_multiseed.py (a dry run) and tests/e2e/test_multiseed_search.py.
SEEDS_SPACE = """
name: seeds_e2e
benchmark: synthetic
objective: {metric: val/delta_m, mode: max}
budget: {num_samples: 2, max_epochs: 2}
scheduler: {type: fifo}
searcher: {type: optuna, sampler: random, seed: 0}
resources: {cpus_per_trial: 1}
params:
  method: gemtl
  p: {uniform: [0.0, 2.0]}
  lr: {loguniform: [1.0e-3, 1.0e-2]}
  seed: 5
"""

#: tests/unit/test_trials_ahead.py and tests/e2e/test_trials_ahead_search.py (a format string): short
#: trials whose count and resources decide how many Ray Tune queues ahead.
AHEAD_SPACE = """
name: ahead
benchmark: synthetic
objective: {{metric: val/delta_m, mode: max}}
budget: {{num_samples: {samples}, max_epochs: 1}}
scheduler: {{type: fifo}}
searcher: {{type: optuna, sampler: tpe, seed: 0}}
resources: {{cpus_per_trial: {cpus}, gpus_per_trial: {gpus}}}
params:
  method: gemtl
  p: {{uniform: [0.0, 1.0]}}
  lr: {{loguniform: [1.0e-3, 1.0e-2]}}
  seed: 0
"""
