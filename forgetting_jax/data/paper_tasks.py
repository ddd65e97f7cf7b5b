"""The paper's task lists and prediction splits, as its final code names them (AuCson/low-rank-
forgetting: configs/llm/llm_defaults.yaml for the lists, post_process/fpd_utils.py for the splits).

  FLAN_TASKS        the 66 FLAN tasks of the matrix, in the final code's row order
  FLAN_TEST_TASKS   its 20 in-domain test tasks (`create_flan_fpd_in_domain_split`: rows 6, 65,
                    18, ... of FLAN_TASKS)
  TULU_TASKS, DOLLY_TASKS   the out-of-domain rows (`create_fpd_ood_split_ood`): every Tulu or Dolly
                    task is a test task, predicted from the FLAN training rows

`split(name)` gives (rows of the matrix, training tasks, test tasks) of each named split:

  flan_id    the 46 FLAN training tasks predict the 20 FLAN test tasks
  ood_tulu   the 46 FLAN training tasks predict the 11 Tulu tasks
  ood_dolly  the 46 FLAN training tasks predict the 8 Dolly tasks
"""

FLAN_TASKS = tuple(f"{name}_10templates" for name in (
    "aeslc", "ag_news_subset", "anli_r1", "anli_r2", "anli_r3", "arc_challenge", "arc_easy", "bool_q", "cb",
    "cnn_dailymail", "cola", "common_gen", "copa", "coqa", "cosmos_qa", "dart", "definite_pronoun_resolution", "drop",
    "e2e_nlg", "fix_punct", "gigaword", "glue_mrpc", "glue_qqp", "hellaswag", "imdb_reviews", "math_dataset",
    "mnli_matched", "mnli_mismatched", "multi_news", "multirc", "natural_questions", "openbookqa",
    "opinion_abstracts_idebate", "opinion_abstracts_rotten_tomatoes", "para_crawl_enes", "paws_wiki", "piqa", "qnli",
    "quac", "record", "rte", "samsum", "sentiment140", "snli", "squad_v1", "squad_v2", "sst2", "story_cloze", "stsb",
    "trec", "trivia_qa", "true_case", "web_nlg_en", "wic", "wiki_lingua_english_en", "wmt14_enfr",
    "wmt16_translate_csen", "wmt16_translate_deen", "wmt16_translate_fien", "wmt16_translate_roen",
    "wmt16_translate_ruen", "wmt16_translate_tren", "wnli", "word_segment", "wsc", "yelp_polarity_reviews"))
FLAN_TEST_ROWS = (6, 65, 18, 8, 60, 13, 37, 22, 30, 19, 64, 50, 25, 31, 32, 61, 16, 5, 53, 49)
FLAN_TEST_TASKS = tuple(FLAN_TASKS[i] for i in FLAN_TEST_ROWS)
FLAN_TRAIN_TASKS = tuple(t for t in FLAN_TASKS if t not in FLAN_TEST_TASKS)
TULU_TASKS = ("open_orca", "oasst1", "lima", "code_alpaca", "gpt4_alpaca", "cot", "science", "flan_v2", "sharegpt",
              "hard_coded", "wizardlm")
DOLLY_TASKS = ("brainstorming", "closed_qa", "information_extraction", "classification", "open_qa", "general_qa",
               "creative_writing", "summarization")
SPLITS = ("flan_id", "ood_tulu", "ood_dolly")


def split(name: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(the matrix's tasks, the training tasks, the test tasks) of a named split (SPLITS)."""
    if name == "flan_id":
        return FLAN_TASKS, FLAN_TRAIN_TASKS, FLAN_TEST_TASKS
    if name in ("ood_tulu", "ood_dolly"):
        ood = TULU_TASKS if name == "ood_tulu" else DOLLY_TASKS
        return FLAN_TASKS + ood, FLAN_TRAIN_TASKS, ood
    raise ValueError(f"split {name!r} is not one of {', '.join(SPLITS)}")
