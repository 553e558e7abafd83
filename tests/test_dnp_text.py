"""guidance.dnp: caption clean-up, combining n* with the user's negative, word-boundary truncation."""

import pytest

from guidance.dnp import clean_caption, combine_negative, truncate_words


@pytest.mark.parametrize(
    "caption, expected",
    [
        ("arafed view of a dark alley with trash.", "view of a dark alley with trash"),
        ("there is a blurry photo of a dog", "a blurry photo of a dog"),
        ("A picture of a red car on a street", "a red car on a street"),
        ("The image shows a cluttered room.", "a cluttered room"),
        ("In this image, two cats sleep", "two cats sleep"),
        ("  a   cat\n on  a mat ", "a cat on a mat"),
        ("a close up of an araffe toy", "a close up of an toy"),
    ],
)
def test_clean_caption_strips_boilerplate(caption, expected):
    assert clean_caption(caption) == expected


@pytest.mark.parametrize(
    "mode, expected",
    [("append", "blurry, a dark alley"), ("prepend", "a dark alley, blurry"), ("replace", "a dark alley")],
)
def test_combine_negative_modes(mode, expected):
    assert combine_negative("a dark alley", "blurry", mode) == expected


def test_combine_negative_skips_an_empty_user_negative():
    assert combine_negative("a dark alley", "  ", "append") == "a dark alley"


def test_combine_negative_rejects_unknown_modes():
    with pytest.raises(ValueError, match="valid: append, replace, prepend"):
        combine_negative("x", "y", "merge")


def count_words(text):
    return len(text.split())


def test_truncate_keeps_text_within_the_limit():
    assert truncate_words("one two three", count_words, 5) == ("one two three", False)


def test_truncate_cuts_at_a_word_boundary_and_says_so():
    assert truncate_words("one two three, four five six", count_words, 3) == ("one two three", True)


def test_truncate_with_no_limit_keeps_everything():
    text = " ".join(["word"] * 500)
    assert truncate_words(text, count_words, 0) == (text, False)
