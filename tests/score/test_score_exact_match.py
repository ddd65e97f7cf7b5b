"""Exact-match judging per answer kind, on answers written the ways models write them."""

import pytest

from forgetting_jax.score.exact_match import (PAPER_BUDGET, answer_budget, answer_kind, before_blank_line, correctness,
                                              extract_answer, is_correct, max_new_tokens, normalize_answer,
                                              stop_strings)


def test_squad_normalisation():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("an apple, a pear") == "apple pear"


@pytest.mark.parametrize("completion,right", [
    ("B", True), (" B. Paris", True), ("(B)", True), ("The answer is B", True), ("Answer: (B) Paris", True),
    ("A", False), ("The answer is C.", False), ("Paris", False), ("", False), ("Because of B", False),
])
def test_mmlu_letters(completion, right):
    assert is_correct("mmlu", completion, "B") is right


def test_mmlu_text_reference_by_normalised_match():
    assert is_correct("mmlu", "the Paris", "Paris") and not is_correct("mmlu", "Lyon", "Paris")


@pytest.mark.parametrize("completion,target,right", [
    ("(A)", "(A)", True), ("A", "(A)", True), ("(A) Yes", "(A)", True), ("So the answer is (A).", "(A)", True),
    ("(B)", "(A)", False), ("", "(A)", False), ("Apple", "(A)", False),
    ("True", "True", True), ("false", "True", False), ("valid", "valid", True), ("invalid", "valid", False),
    ("The answer is 12.", "12", True), ("13", "12", False), ("] ]\nmore", "] ]", True),
])
def test_bbh_targets(completion, target, right):
    assert is_correct("bbh", completion, target) is right


def test_truthfulqa_best_or_any_correct_answer():
    best = "Nothing happens if you eat watermelon seeds."
    assert is_correct("truthfulqa", "nothing happens if you eat watermelon seeds\nThey pass through.", best)
    assert not is_correct("truthfulqa", "You grow watermelons in your stomach.", best)
    assert is_correct("truthfulqa", "The seeds pass through you", [best, "The seeds pass through you."])


def test_short_and_demo():
    assert is_correct("short", "  The Beatles. ", "Beatles")
    assert not is_correct("short", "The Rolling Stones", "Beatles")
    assert is_correct("demo", " HELLO\n", "HELLO")
    assert not is_correct("demo", "hello", "HELLO")  # case is the answer
    assert not is_correct("demo", '{"a": 1}', '{"a":1}')
    assert list(correctness("demo", ["42", "41"], ["42", "42"])) == [True, False]


def test_kinds_and_defaults():
    assert answer_kind("mmlu") == "mmlu" and answer_kind("tulu") == "short" and answer_kind("demo_tasks") == "demo"
    with pytest.raises(ValueError, match="has no answers"):
        answer_kind("lm")
    with pytest.raises(ValueError, match="answer kind"):
        extract_answer("squad", "x")
    assert max_new_tokens("mmlu") < max_new_tokens("truthfulqa") and stop_strings("demo") == ("\n",)


@pytest.mark.parametrize("kind,completion,reference", [
    ("short", "Paris\n\nMore text", "Paris"), ("truthfulqa", "Paris\n\nMore text", "Paris"),
    ("demo", "Paris\n\nMore text", "Paris"), ("mmlu", "B\n\nThe answer is C", "B"),
    ("bbh", "So the answer is (A).\n\nThe answer is (B).", "(A)"),
])
def test_answers_are_judged_before_the_first_blank_line(kind, completion, reference):
    assert is_correct(kind, completion, reference)
    assert not is_correct(kind, completion.split("\n\n")[1], reference)


def test_the_blank_line_cut_comes_before_extraction():
    assert before_blank_line("Paris\n\nMore\n\ntext") == "Paris" and before_blank_line("Paris\nLyon") == "Paris\nLyon"
    assert extract_answer("short", "Paris \n\nLyon") == "Paris"
    assert not is_correct("demo", "\n\nParis", "Paris")  # nothing before the blank line: no answer


def test_answer_budget_is_the_papers_where_the_positions_leave_room():
    assert PAPER_BUDGET == 512
    assert answer_budget("demo", 4096, 300)[0] == 512 and "paper" in answer_budget("demo", 4096, 300)[1]
    assert answer_budget("short", 512, 44)[0] == 468  # the room after the longest prompt
    budget, why = answer_budget("demo", 64, 50)  # 14 left: the kind's own 24 (the longest prompts are cut)
    assert budget == max_new_tokens("demo") == 24 and "own budget" in why
    assert answer_budget("truthfulqa", 128, 200)[0] == max_new_tokens("truthfulqa")  # a prompt over the positions
    assert answer_budget("mmlu", 8, 3)[0] == 5  # the kind's 8 does not fit 8 positions: the room
