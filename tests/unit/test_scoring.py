import pytest

from memento.memory.scoring import exact_match, normalize_answer, score_answer, token_f1


def test_normalisation_ignores_case_punctuation_and_articles():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert exact_match("the eiffel tower", "Eiffel Tower.") == 1.0


def test_token_f1_partial_overlap():
    assert token_f1("William Shakespeare", "Shakespeare") == pytest.approx(2 / 3)
    assert token_f1("Marlowe", "Shakespeare") == 0.0


def test_reward_uses_best_of_split_answers_and_threshold():
    assert score_answer("Paris", "Lyon<|answer_split|>paris").reward == 1.0
    assert score_answer("William Shakespeare", "Shakespeare").reward == 0.0
    assert score_answer("William Shakespeare", "Shakespeare", f1_threshold=0.6).reward == 1.0
    assert score_answer("42", "43").reward == 0.0
