"""``report sync`` writes the launcher's budget warning too (``report.syncing.budget_warning``): a method
whose trials were all stopped early is named, as the launcher tags it on the search's parent run."""

from helpers.report_search import _search

from mtlsearch.report.syncing import budget_warning
from mtlsearch.tracking import STATUS_COMPLETED, STATUS_STOPPED


def test_a_method_without_a_full_budget_trial_is_named_as_the_launcher_names_it():
    search = _search()
    for i, t in enumerate(search.trials):
        t.params["method"] = "ew" if i % 2 else "gemtl"
        t.status, t.epochs = (STATUS_STOPPED, 3) if i % 2 else (STATUS_COMPLETED, 12)
    assert budget_warning(search) == (
        "warning: unequal budget per method: no trial trained the full budget: ew (ranked on a stopped or errored trial's value)"
    )
    for t in search.trials:
        t.status, t.epochs = STATUS_COMPLETED, 12
    assert budget_warning(search) is None
    search.max_epochs = 0  # a results folder that does not say its budget: no warning made up
    assert budget_warning(search) is None
