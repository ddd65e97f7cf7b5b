"""The paper's task lists and named prediction splits, and the FLAN configs that use them."""

import pytest

from config_files import load_config
from forgetting_jax.data import paper_tasks
from forgetting_jax.experiment import as_experiment


def test_lists_follow_the_final_code():
    assert len(paper_tasks.FLAN_TASKS) == 66 == len(set(paper_tasks.FLAN_TASKS))
    assert paper_tasks.FLAN_TEST_TASKS[:3] == ("arc_easy_10templates", "yelp_polarity_reviews_10templates",
                                               "e2e_nlg_10templates")
    assert len(paper_tasks.FLAN_TEST_TASKS) == 20 and len(paper_tasks.FLAN_TRAIN_TASKS) == 46
    assert len(paper_tasks.TULU_TASKS) == 11 and len(paper_tasks.DOLLY_TASKS) == 8


@pytest.mark.parametrize("name", paper_tasks.SPLITS)
def test_named_splits(name):
    tasks, train, test = paper_tasks.split(name)
    assert set(train) | set(test) <= set(tasks) and not set(train) & set(test)
    assert set(train) == set(paper_tasks.FLAN_TRAIN_TASKS)
    with pytest.raises(ValueError, match="flan_id"):
        paper_tasks.split("flan")


@pytest.mark.parametrize("path", ["olmo_1b_dolma_flan", "olmo_7b_dolma_flan"])
def test_flan_configs_carry_the_split(path):
    default = as_experiment(load_config(path))
    assert default.predict.test_tasks == paper_tasks.FLAN_TEST_TASKS and len(default.data.tasks) == 66
    dolly = as_experiment(load_config(path, "ood_dolly"))
    assert dolly.predict.test_tasks == paper_tasks.DOLLY_TASKS
    assert dolly.predict.train_tasks == paper_tasks.FLAN_TRAIN_TASKS
